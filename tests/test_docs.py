"""The README is a newcomer's page and docs/ holds the details: short, every link resolves, the two commands
are there, notebook 05 can still write its results section, and ``--help`` speaks to a user."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ser_utils.core.config import REPO_ROOT
from ser_utils.results.tables import replace_marked

README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
#: About 150 lines with a compact results table; the generated section is rewritten by notebook 05.
README_MAX_LINES = 170
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (a shell example's brackets are not links)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes for a Markdown file: lower case, punctuation dropped, spaces -> '-'."""
    headings = re.findall(r"^#+\s+(.*?)\s*$", _prose(path.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def _broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto: - not a file of the repository
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page.resolve()
        if not resolved.exists() or REPO_ROOT.resolve() not in resolved.parents:
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    return broken


def test_the_readme_is_short_names_the_two_commands_and_keeps_the_results_section(tmp_path):
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "make all" in text and "make test" in text
    # Notebook 05 rewrites what stands between the markers: they must be there, once each.
    copy = tmp_path / "README.md"
    copy.write_text(text)
    assert replace_marked(copy, "results", "| regenerated |")
    before, after = text.split("<!-- results -->")[0], text.split("<!-- /results -->")[1]
    assert copy.read_text() == f"{before}<!-- results -->\n| regenerated |\n<!-- /results -->{after}"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_resolves(page):
    assert DOCS, "docs/ has no pages"
    assert _broken_links(page) == []


def test_the_readme_links_every_docs_page():
    assert DOCS, "docs/ has no pages"
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    assert [page.name for page in DOCS if page.resolve() not in linked] == []


def test_every_command_is_described_in_docs_usage():
    from ser_utils.__main__ import build_parser

    commands = next(action for action in build_parser()._actions if action.dest == "command").choices
    assert set(commands) - _anchors(REPO_ROOT / "docs" / "usage.md") == set()


def test_help_describes_the_commands_for_a_user():
    done = subprocess.run([sys.executable, "-m", "ser_utils", "--help"], capture_output=True, text=True,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert "ser_utils.cli" not in done.stdout and ":mod:" not in done.stdout  # not the module layout
    assert "examples:" in done.stdout and "python -m ser_utils predict " in done.stdout
    for command in ("pipeline", "validate", "predict", "evaluate", "backbone", "finetune", "compare-results"):
        assert re.search(rf"^\s+{command}\s+\S", done.stdout, flags=re.M) or f"{command}\n" in done.stdout
