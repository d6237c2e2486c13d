"""The package's shape: sub-packages in layer order, each importing only the layers below it, light commands
that stay light."""

import ast
import re
import subprocess
import sys

import pytest

from ser_utils.core.config import REPO_ROOT

PACKAGE = REPO_ROOT / "ser_utils"
MAX_MODULE_LINES = 400


def layers() -> list[str]:
    """The sub-packages in the order ``ser_utils/__init__.py`` lists them (lower layers first)."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    return list(dict.fromkeys(re.findall(r"^``([a-z_0-9]+)/``", doc, flags=re.MULTILINE)))


def imported_layers(path):
    """The sub-packages of ``ser_utils`` a source file imports (relative imports, also inside functions)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            package = list(parts[:-1])[:len(parts) - node.level]
            names = [node.module] if node.module else [alias.name for alias in node.names]
            for name in names:
                yield ([*package, *name.split(".")] or [""])[0]


def test_the_top_level_holds_only_the_listed_sub_packages_and_the_entry_points():
    entries = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    assert entries == {f for f in layers()} | {"__init__.py", "__main__.py"}, \
        f"present but not listed in ser_utils/__init__.py, or listed but missing: {entries ^ set(layers())}"
    for layer in layers():
        init = PACKAGE / layer / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), f"{layer}/__init__.py says nothing"


def test_every_layer_imports_only_the_layers_listed_before_it():
    rank = {name: i for i, name in enumerate(layers())}
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = path.relative_to(PACKAGE).parts[0]
        if me in ("__init__.py", "__main__.py"):
            continue
        for layer in imported_layers(path):
            if layer in rank and rank[layer] > rank[me]:
                upward.append(f"{path.relative_to(REPO_ROOT)} imports {layer}")
    assert not upward


def test_no_module_is_longer_than_the_limit():
    long = {str(p.relative_to(REPO_ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long


def test_the_backbone_command_imports_neither_training_nor_the_study():
    code = ("import sys; from ser_utils.__main__ import main; main(['backbone', 'whisper-tiny.en']); "
            "print(sorted(m for m in sys.modules if m.startswith('ser_utils')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.strip().splitlines()[-1]
    assert "'ser_utils.backbones.loading'" in loaded
    for heavy in ("ser_utils.training", "ser_utils.study.systems", "ser_utils.study.finetuning",
                  "ser_utils.study.baselines", "ser_utils.models.classifier"):
        assert f"'{heavy}" not in loaded


@pytest.mark.parametrize("command", ["predict", "evaluate", "compare-results", "pipeline"])
def test_a_commands_help_imports_no_numerical_library(command):
    """``--help`` (the parser with every command's choices and defaults) reads them from core.config: it took
    4 s when the parser imported the modules that use them (torch, scikit-learn, pandas)."""
    code = ("import sys; from ser_utils.__main__ import build_parser\n"
            f"try:\n    build_parser().parse_args([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sklearn', 'pandas', 'numpy'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m ser_utils" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"
