"""The package's shape: rooms imported only from above, light commands that stay light."""

import ast
import re
import subprocess
import sys

from ser_utils.config import REPO_ROOT

PACKAGE = REPO_ROOT / "ser_utils"


def rooms() -> list[str]:
    """The top-level modules in the order ``ser_utils/__init__.py`` lists them (lower rooms first)."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    listed = doc[doc.index("``names``"):]
    order = []
    for name in re.findall(r"``([a-z_0-9]+)/?``", listed):
        if ((PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir()) and name not in order:
            order.append(name)
    return order


def imported_rooms(path):
    """The top-level modules of ``ser_utils`` a source file imports (relative imports, also inside functions)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            package = list(parts[:-1])[:len(parts) - node.level]
            names = [node.module] if node.module else [alias.name for alias in node.names]
            for name in names:
                yield ([*package, *name.split(".")] or [""])[0]


def test_every_module_is_listed_and_imports_only_from_rooms_above_it():
    order = rooms()
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} | {p.name for p in PACKAGE.iterdir()
                                                                       if (p / "__init__.py").is_file()}
    assert set(order) == modules, f"listed in ser_utils/__init__.py but missing, or present but unlisted: " \
                                  f"{set(order) ^ modules}"
    rank = {name: i for i, name in enumerate(order)}
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if me == "__init__":
            continue
        for room in imported_rooms(path):
            if room in rank and room != me and rank[room] > rank[me]:
                upward.append(f"{path.relative_to(REPO_ROOT)} imports {room}")
    assert not upward


def test_the_backbone_command_imports_neither_training_nor_the_systems():
    code = ("import sys; from ser_utils.__main__ import main; main(['backbone', 'whisper-tiny.en']); "
            "print(sorted(m for m in sys.modules if m.startswith('ser_utils')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.strip().splitlines()[-1]
    assert "ser_utils.backbones.loading" in loaded
    for heavy in ("ser_utils.train", "ser_utils.systems", "ser_utils.finetuning", "ser_utils.model",
                  "ser_utils.baselines"):
        assert f"'{heavy}'" not in loaded
