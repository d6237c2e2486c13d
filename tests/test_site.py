"""The reports as a reader gets them: the front page's answer, its numbers, and every page's links."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

from ser_utils.core.config import REPO_ROOT
from ser_utils.results import findings, glossary, site


def _row(system: str, protocol: str, uar: float | None, std: float = 0.05, note: str = "") -> dict:
    ok = uar is not None
    return {"system": system, "kind": "baseline" if "+" in system.split("-")[0] else system.split("-")[0],
            "protocol": protocol, "folds": 6 if ok else 0, "status": "ok" if ok else "not run", "note": note,
            "uar_mean": uar if ok else np.nan, "uar_std": std if ok else np.nan,
            "accuracy_mean": uar if ok else np.nan, "accuracy_std": std if ok else np.nan,
            "macro_f1_mean": uar if ok else np.nan, "macro_f1_std": std if ok else np.nan}


@pytest.fixture
def comparison() -> pd.DataFrame:
    """A comparison table shaped like notebook 05's, with the transductive system best overall."""
    systems = {"whisper-project-frozen+spknorm": (0.826, 0.90), "whisper-project-frozen+spknorm-k10": (0.777, 0.88),
               "whisper-project-ft-top1": (0.732, 0.847), "whisper-project-frozen": (0.725, 0.871),
               "egemaps+logreg": (0.502, 0.598), "egemaps+logreg+spknorm": (0.598, 0.679),
               "mfcc-set+rf": (0.437, 0.626)}
    rows = [_row(s, p, v) for s, (a, r) in systems.items() for p, v in (("actor-kfold", a), ("random-80-20", r))]
    reason = "pretrained weights 'facebook/wav2vec2-base' are not available here; set SER_BACKBONE to a local copy"
    rows += [_row("w2v2-project-frozen", "actor-kfold", None, note=reason),
             _row("w2v2-project-frozen+spknorm", "actor-kfold", None,
                  note="transductive: each speaker standardised with all of their own unlabelled clips; " + reason),
             _row("whisper-project-ft", "actor-kfold", None, note="fine-tuning needs a GPU")]
    return pd.DataFrame(rows)


def test_the_headline_opens_on_systems_that_use_nothing_of_the_test_speaker(comparison):
    rows = findings.headline_rows(comparison)
    measured = [r for r in rows if r["kind"] != "published"]
    assert [r["use"] for r in rows][:3] == ["nothing"] * 3
    assert measured[0]["system"] == "whisper-project-ft-top1"  # not the transductive 82.6, best overall
    by_system = {r["system"]: r for r in measured}
    assert by_system["whisper-project-frozen+spknorm"]["use"] == "all clips"
    assert by_system["whisper-project-frozen+spknorm-k10"]["use"] == "enrolment"
    assert "mfcc-set+rf" not in by_system  # one row per kind and use: the best handcrafted is eGeMAPS
    assert by_system["whisper-project-ft-top1"]["primary"] == "73.2 ± 5.0"
    assert by_system["egemaps+logreg"]["secondary"] == "59.8 ± 5.0"
    assert any(r["kind"] == "published" and r["primary"] == "75.3" for r in rows)


def test_the_takeaway_says_the_answers_with_the_tables_numbers(comparison):
    text = " ".join(findings.takeaways(comparison))
    assert "by 23.0 points" in text  # 73.2 - 50.2
    assert "adds 0.7 points" in text  # fine-tuned 73.2 against frozen 72.5
    assert "84.7 against 73.2 % (+11.5)" in text  # the random split of the same system
    assert "78.8" not in text and "77.7 %" in text and "82.6 %" in text
    assert "75.3 %" in text


def test_systems_that_did_not_run_are_one_line_per_reason(comparison):
    groups = dict((reason, systems) for reason, systems in findings.not_run(comparison))
    weights = next(r for r in groups if "wav2vec2-base" in r)
    assert groups[weights] == ["w2v2-project-frozen", "w2v2-project-frozen+spknorm"]
    assert not weights.startswith("transductive")
    assert groups["fine-tuning needs a GPU"] == ["whisper-project-ft"]


def test_the_title_names_only_the_encoders_that_ran(comparison):
    assert "Whisper-base" in findings.title(comparison) and "wav2vec" not in findings.title(comparison)


def test_system_names_are_said_in_words():
    assert findings.describe("whisper-selected-frozen+spknorm-k10") == (
        "Whisper-base, frozen, head chosen by inner CV, speaker-normalized (10 enrolment clips)")
    assert findings.describe("egemaps+logreg+spknorm") == (
        "eGeMAPS features, logistic regression, speaker-normalized (all clips, transductive)")
    assert findings.describe("whisper-project-ft-top2") == "Whisper-base, top 2 layer fine-tuned, project head"


def test_a_glossary_link_to_a_missing_term_is_an_error():
    assert "glossary.html#uar" in glossary.term_link("uar")
    with pytest.raises(KeyError):
        glossary.term_link("no-such-term")


# ------------------------------------------------------------------------------------------- the pages

class _Page(HTMLParser):
    """Links, sources, ids, scripts and column headers (``thead``) of one page."""

    def __init__(self):
        super().__init__()
        self.links, self.ids, self.scripts, self.headers, self.navs = [], set(), [], [], 0
        self._in_th = self._in_head = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])
        if tag == "script":
            self.scripts.append(attrs.get("src"))
        if tag == "nav":
            self.navs += 1
        self._in_th = tag == "th" and self._in_head
        self._in_head = self._in_head or tag == "thead"

    def handle_data(self, data):
        if self._in_th and data.strip():
            self.headers.append(data.strip())

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False
        if tag == "thead":
            self._in_head = False


def _parse(path: Path) -> _Page:
    parser = _Page()
    parser.feed(path.read_text())
    return parser


def check_pages(reports: Path, forbidden_paths: list[str]) -> list[str]:
    """Every defect of a reports folder a reader would meet; empty when none."""
    problems, pages = [], sorted(reports.glob("*.html"))
    parsed = {p.name: _parse(p) for p in pages}
    for name, page in parsed.items():
        text = (reports / name).read_text()
        if page.navs < 1 or "index.html" not in page.links:
            problems.append(f"{name}: no navigation to the front page")
        problems += [f"{name}: external script {s}" for s in page.scripts if s]
        # A path relative to the repository ("../shared/data") is how reports name data; an absolute one is not.
        problems += [f"{name}: machine path {p}" for p in forbidden_paths
                     if re.search(rf"(?<![.\w]){re.escape(p)}", text)]
        problems += [f"{name}: raw header {h}" for h in page.headers if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", h)]
        for link in page.links:
            url = urlparse(link)
            if url.scheme in ("http", "https", "mailto", "data") or link.startswith("javascript:"):
                if url.scheme in ("http", "https") and link.endswith(".js"):
                    problems.append(f"{name}: loads {link}")
                continue
            target = reports / unquote(url.path) if url.path else reports / name
            if not target.exists():
                problems.append(f"{name}: broken link {link}")
            elif url.fragment and target.suffix == ".html":
                ids = parsed[target.name].ids if target.name in parsed else _parse(target).ids
                if url.fragment not in ids:
                    problems.append(f"{name}: broken anchor {link}")
    return problems


def test_the_site_pages_link_only_to_what_exists(tmp_path, comparison, monkeypatch):
    monkeypatch.setenv("SER_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("SER_WORK_DIR", str(tmp_path / "work"))
    from ser_utils.core.config import get_profile
    from ser_utils.results import store

    profile = get_profile("smoke")
    store.write_table(comparison, profile.results_dir, "comparison")
    index = site.write_site(profile, tuple(site.REPORTS))
    for name in site.REPORTS:  # the notebooks' reports, as the pipeline would have rendered them
        (profile.reports_dir / f"{name}.html").write_text(site.page(name, "<p>report</p>", f"{name}.html"))
    assert check_pages(profile.reports_dir, [str(REPO_ROOT), str(tmp_path)]) == []
    front = index.read_text()
    assert front.index("What it found") < front.index("whisper-project-ft-top1") < front.index(
        "whisper-project-frozen+spknorm")
    assert "<svg" in front and "<figcaption>" in front


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "index.html").write_text("<nav></nav><a href='index.html'>x</a><a href='missing.html'>y</a>"
                                         "<a href='index.html#nowhere'>z</a><script src='https://cdn/x.js'></script>")
    problems = check_pages(tmp_path, ["/root"])
    assert any("missing.html" in p for p in problems) and any("#nowhere" in p for p in problems)
    assert any("external script" in p for p in problems)


@pytest.mark.slow
def test_the_smoke_reports_read_as_a_site(tmp_path, monkeypatch):
    """The whole smoke pipeline, then every page as a reader's browser would follow it."""
    monkeypatch.setenv("SER_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("SER_REPORTS_DIR", str(tmp_path / "reports"))
    from ser_utils.cli.pipeline import NOTEBOOKS, run_pipeline
    from ser_utils.results.store import read_table

    run_pipeline("smoke")
    reports = tmp_path / "reports"
    assert {f"{n}.html" for n in NOTEBOOKS} | {"index.html", "results.html", "glossary.html"} <= {
        p.name for p in reports.glob("*.html")}
    assert check_pages(reports, [str(REPO_ROOT), str(tmp_path), "/root/"]) == []
    for name in NOTEBOOKS:
        page = (reports / f"{name}.html").read_text()
        assert "class=\"key-numbers\"" in page or "class='key-numbers'" in page, name
        assert "<details class=\"code\">" in page, name  # code folded, not gone
        assert "No description has been provided" not in page, name
    front = (reports / "index.html").read_text()
    table = read_table(reports / "results", "comparison")
    for row in findings.headline_rows(table):  # every number on the front page is its result file's
        if row["kind"] != "published":
            match = table[(table["system"] == row["system"]) & (table["protocol"] == "actor-kfold")].iloc[0]
            assert row["primary"] == findings.pct(100 * match["uar_mean"], 100 * match["uar_std"])
            assert f"<td class='num'>{row['primary']}</td>" in front


def test_a_reports_key_numbers_are_its_own_runs_not_an_earlier_comparison(tmp_path):
    """03 and 04 are rendered before 05 rewrites comparison.csv: their key numbers come from the metrics they
    have just written (the committed metrics; a stale comparison.csv beside them says 50.0 for every system)."""
    import shutil

    from ser_utils.results.render import key_numbers_html
    from ser_utils.results.store import read_metrics

    results = tmp_path / "results"
    shutil.copytree(REPO_ROOT / "reports" / "results" / "metrics", results / "metrics")
    stale = pd.read_csv(REPO_ROOT / "reports" / "results" / "comparison.csv")
    stale.loc[stale["status"] == "ok", ["uar_mean", "uar_std"]] = [0.5, 0.01]
    stale.to_csv(results / "comparison.csv", index=False)
    fresh = findings.summary_of(read_metrics(results)).set_index(["system", "protocol"])
    page = key_numbers_html("04_pretrained_encoders", results)
    best = fresh.loc[("whisper-selected-frozen", "actor-kfold")]
    assert findings.pct(100 * best["uar_mean"], 100 * best["uar_std"]) in page and "50.0" not in page
    assert "50.0" in key_numbers_html("05_results", results)  # 05 writes comparison.csv before it is rendered
