"""What a cached result depends on, as short digests: :func:`code_digest` hashes the *code* of modules
(their syntax tree without comments and docstrings), so feature, embedding and fold caches are recomputed
when the code that made them changes, and not when only a comment does.

(The other things caches key on: a corpus listing, ``data.corpus.corpus_digest``, and a backbone's
identity, ``backbones.backbone_fingerprint``.)
"""

from __future__ import annotations

import ast
import hashlib
import inspect
from functools import cache
from pathlib import Path
from types import ModuleType


def code_digest(*modules: ModuleType) -> str:
    """Digest (16 hex chars) of the code of ``modules`` (a package: every module in it, subpackages
    included): comments, docstrings and formatting do not count, any change to a statement does."""
    digest = hashlib.blake2b(digest_size=8)
    for module in modules:
        for name, path in _source_files(module):
            digest.update(name.encode() + _module_code(str(path), path.stat().st_mtime_ns).encode())
    return digest.hexdigest()


def _source_files(module: ModuleType) -> list[tuple[str, Path]]:
    """``(qualified name, path)`` of a module's source, or of every ``.py`` file of a package."""
    path = Path(inspect.getsourcefile(module))
    if not hasattr(module, "__path__"):
        return [(module.__name__, path)]
    root = path.parent
    return [(f"{module.__name__}/{p.relative_to(root).as_posix()}", p) for p in sorted(root.rglob("*.py"))]


@cache
def _module_code(path: str, mtime_ns: int) -> str:  # the file's time in the key: an edit is re-read
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]  # drop the docstring
    return ast.dump(tree, annotate_fields=False)
