"""Speaker normalization and enrolment: standardise features per speaker (or per corpus), from the
features alone.

Speaker variability is the classic obstacle of emotion recognition on unseen speakers; the classic
remedy standardises each speaker's features with that speaker's own statistics. Labels are never
used, so the statistics of a test speaker may come from that speaker's unlabelled test clips:

* :class:`Normalization` - the study's setting: ``none``; ``speaker`` (statistics from *all* of a
  speaker's clips, test speakers included: transductive, and labelled so); ``speaker-k`` (statistics
  from ``k`` random clips of each speaker, a realistic enrolment; ``k = 10`` by default). Whether the
  variance is normalized too (``shrunk``) or only the mean (``mean``) is chosen on validation data.
* :class:`SpeakerNormalizer` - the scikit-learn-style transformer: ``fit(X, groups)`` learns a prior
  variance (pooled within-group) and each group's mean and scale; ``transform(X, groups)`` applies
  them. A group's variance is shrunk towards the prior, so a few clips give stable statistics.
* :func:`normalize_table` - a feature table standardised per speaker (frozen embeddings:
  ``training.frozen_heads.normalized_variants``).
* :func:`adapt_features` - the same at prediction time (``predict`` / ``evaluate --adapt``).

The systems built on it (the baselines and frozen heads with a normalization, the enrolment curve, the
deployable speaker-normalized model) are in :mod:`ser_utils.study.normalized_systems`.

System names: ``<features>+<classifier>+spknorm`` and ``<features>+<classifier>+spknorm-k10``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ..core.config import SettingError
from ..core.names import parse_normalization

if TYPE_CHECKING:  # scikit-learn is imported only where baselines are evaluated (predict stays light)
    from . import FeatureTable

VARIANCES = ("mean", "shrunk")
#: Fewest clips (or scoring windows) a group needs for its statistics at prediction time.
MIN_GROUP_CLIPS = 3
#: Weight of the prior variance, in clips: a group of n clips gets n / (n + PRIOR_CLIPS) of its own.
PRIOR_CLIPS = 10.0
#: Below this standard deviation a feature is treated as constant (it is centred, not scaled).
MIN_SCALE = 1e-8


class GroupError(SettingError):
    """A group (speaker or corpus) that cannot be normalized, or a missing group; one line naming the fix.
    ``setting``: the adaptation (``adapt``) unless a more precise one is named (``speaker_pattern``)."""

    def __init__(self, message: str, setting: str = "adapt"):
        super().__init__(message, setting)


@dataclass(frozen=True)
class Normalization:
    """A normalization setting: ``kind`` in ``none | speaker | speaker-k``; ``clips`` = k for ``speaker-k``.

    ``variances`` are the candidates chosen between on validation data (one candidate: no choice).
    """

    kind: str = "none"
    clips: int | None = None
    variances: tuple[str, ...] = VARIANCES

    def __post_init__(self):
        if self.kind not in ("none", "speaker", "speaker-k"):
            raise ValueError(f"normalization {self.kind!r}: choose none, speaker or speaker-k")
        if self.kind == "speaker-k" and (self.clips is None or self.clips < 1):
            raise ValueError(f"normalization speaker-k needs a positive number of clips, got {self.clips}")
        unknown = set(self.variances) - set(VARIANCES)
        if unknown or not self.variances:
            raise ValueError(f"variances {self.variances}: choose among {VARIANCES}")

    @classmethod
    def parse(cls, text: str) -> Normalization:
        """``none``, ``speaker``, ``speaker-k`` (k = 10) or ``speaker-k<N>``, e.g. ``speaker-k5``
        (the grammar: :func:`ser_utils.core.names.parse_normalization`)."""
        kind, clips = parse_normalization(text)
        return cls(kind, clips)

    @property
    def suffix(self) -> str:
        """What the setting adds to a system name: ``""``, ``"+spknorm"`` or ``"+spknorm-k10"``."""
        return {"none": "", "speaker": "+spknorm"}.get(self.kind, f"+spknorm-k{self.clips}")


class SpeakerNormalizer:
    """Standardise each group's rows with that group's own statistics.

    Parameters
    ----------
    variance : ``"shrunk"`` (subtract the group mean, divide by the group's standard deviation shrunk
        towards the prior) or ``"mean"`` (subtract the group mean only).
    clips : statistics from at most this many random rows per group (``None``: all rows).
    prior_clips : weight of the prior variance, in clips.
    min_clips : a group with fewer rows raises :class:`GroupError`.
    prior_var : ``(n_features,)`` prior variance; ``None``: the pooled within-group variance of ``fit``.
    seed : which random rows are drawn.

    ``fit(X, groups)`` with ``X`` ``(n, d)`` and ``groups`` ``(n,)`` learns ``prior_var_``,
    ``means_`` and ``scales_`` (group -> ``(d,)``); ``transform(X, groups)`` returns ``(n, d)``.
    """

    def __init__(self, variance: str = "shrunk", clips: int | None = None, *, prior_clips: float = PRIOR_CLIPS,
                 min_clips: int = 1, prior_var: np.ndarray | None = None, seed: int = 0):
        if variance not in VARIANCES:
            raise ValueError(f"variance {variance!r}: choose one of {VARIANCES}")
        self.variance, self.clips, self.prior_clips = variance, clips, prior_clips
        self.min_clips, self.prior_var, self.seed = min_clips, prior_var, seed

    def _enrolment(self, X: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        rows = {}
        for group in sorted(set(groups.tolist()), key=str):
            index = np.flatnonzero(groups == group)
            if len(index) < self.min_clips:
                raise GroupError(f"group {group!r} has {len(index)} clip(s); its statistics need at least "
                                 f"{self.min_clips}: group more files together (more per speaker, or the whole "
                                 "corpus as one group)")
            if self.clips is not None and len(index) > self.clips:
                index = np.sort(rng.choice(index, self.clips, replace=False))
            rows[group] = X[index]
        return rows

    def fit(self, X: np.ndarray, groups: Sequence) -> SpeakerNormalizer:
        X, groups = self._check(X, groups)
        enrolled = self._enrolment(X, groups)
        if self.prior_var is not None:
            self.prior_var_ = np.asarray(self.prior_var, dtype=np.float64)
            if self.prior_var_.shape != X.shape[1:]:
                raise ValueError(f"prior_var has shape {self.prior_var_.shape}, features {X.shape[1:]}")
        else:  # pooled within-group variance: how much a speaker's clips vary around the speaker's mean
            centred = np.concatenate([x - x.mean(0) for x in enrolled.values()])
            dof = max(len(centred) - len(enrolled), 1)
            self.prior_var_ = (centred ** 2).sum(0) / dof
        self.means_, self.scales_ = {}, {}
        for group, x in enrolled.items():
            self.means_[group] = x.mean(0)
            n = len(x)
            shrunk = (n * x.var(0) + self.prior_clips * self.prior_var_) / (n + self.prior_clips)
            scale = np.sqrt(shrunk)
            self.scales_[group] = (np.where(scale < MIN_SCALE, 1.0, scale) if self.variance == "shrunk"
                                   else np.ones_like(scale))
        return self

    def transform(self, X: np.ndarray, groups: Sequence) -> np.ndarray:
        X, groups = self._check(X, groups)
        out = np.empty_like(X)
        for group in set(groups.tolist()):
            if group not in self.means_:
                raise GroupError(f"group {group!r} was not seen by fit")
            rows = groups == group
            out[rows] = (X[rows] - self.means_[group]) / self.scales_[group]
        return out

    def fit_transform(self, X: np.ndarray, groups: Sequence) -> np.ndarray:
        return self.fit(X, groups).transform(X, groups)

    @staticmethod
    def _check(X, groups) -> tuple[np.ndarray, np.ndarray]:
        X, groups = np.asarray(X, dtype=np.float64), np.asarray(groups, dtype=object)
        if X.ndim != 2 or groups.shape != (len(X),):
            raise ValueError(f"X must be (n, d) and groups (n,), got {X.shape} and {groups.shape}")
        return X, groups.astype(str)


def normalize_table(table: FeatureTable, variance: str, clips: int | None = None, *, group: str = "actor",
                    seed: int = 0) -> FeatureTable:
    """``table`` with every ``group`` (speaker) standardised by :class:`SpeakerNormalizer`; same rows.

    Only ``table.X`` and the group column are read: labels play no part.
    """
    X = SpeakerNormalizer(variance, clips, seed=seed).fit_transform(table.X, table.meta[group])
    return replace(table, X=X)


# --- prediction time ---------------------------------------------------------------------------------

def normalizer_config(variance: str, prior_var: np.ndarray, clips_per_speaker: int | None) -> dict:
    """What a speaker-normalized model folder records (``config.json`` -> ``normalization``)."""
    return {"kind": "speaker", "variance": variance, "clips_per_speaker": clips_per_speaker,
            "prior_clips": PRIOR_CLIPS, "min_clips": MIN_GROUP_CLIPS, "prior_var": [float(v) for v in prior_var]}


def adapt_features(X: np.ndarray, groups: Sequence | None, normalization: dict | None, *,
                   train_mean: np.ndarray, train_scale: np.ndarray, model: str = "the model") -> np.ndarray:
    """Features ``(n, d)`` of new audio, adapted per group before a saved pipeline sees them.

    * plain model (``normalization`` ``None`` or kind ``none``), ``groups`` given: each group is
      re-standardised to the training statistics (``train_mean``, ``train_scale``: the pipeline's
      scaler), its variance shrunk towards the training variance;
    * speaker-normalized model: each group is standardised as the training speakers were; a group is
      required (:class:`GroupError` otherwise);
    * ``groups`` ``None`` and a plain model: ``X`` unchanged.
    """
    kind = (normalization or {}).get("kind", "none")
    if groups is None:
        if kind != "none":
            raise GroupError(f"{model} was trained with speaker normalization and needs groups of clips: by speaker, "
                             "or the whole corpus as one group")
        return X
    if kind == "none":
        normalizer = SpeakerNormalizer("shrunk", min_clips=MIN_GROUP_CLIPS, prior_var=np.asarray(train_scale) ** 2)
        return train_mean + train_scale * normalizer.fit_transform(X, groups)
    normalizer = SpeakerNormalizer(normalization["variance"], prior_clips=normalization["prior_clips"],
                                   min_clips=normalization["min_clips"],
                                   prior_var=np.asarray(normalization["prior_var"]))
    return normalizer.fit_transform(X, groups)


def describe(normalization: dict | None) -> str:
    """One line for reports: ``none`` or e.g. ``speaker (mean and shrunk variance, 10 clips per training speaker)``."""
    if not normalization or normalization.get("kind", "none") == "none":
        return "none"
    clips = normalization.get("clips_per_speaker")
    what = "mean only" if normalization["variance"] == "mean" else "mean and shrunk variance"
    return f"speaker ({what}, {'all' if clips is None else clips} clips per training speaker)"


__all__ = ["MIN_GROUP_CLIPS", "PRIOR_CLIPS", "VARIANCES", "GroupError", "Normalization", "SpeakerNormalizer",
           "adapt_features", "describe", "normalize_table", "normalizer_config"]
