"""The two evaluation protocols, and the only place where train/validation/test sets are made.

* ``random-80-20``: stratified random 80/20 split (as in the original write-up), repeated over seeds.
  Actors appear in both train and test, so it over-states accuracy for unseen speakers.
* ``actor-kfold`` (primary): the EmoBox benchmark's six actor-independent RAVDESS folds. Validation
  actors for early stopping and model selection come from the training part of each fold.

Splits hold clip stems (not row numbers), so a saved split means the same clips on any machine.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ..core.atomic import atomic_write_text
from ..core.config import PROTOCOLS

#: EmoBox's RAVDESS folds: fold -> test actors (Ma et al. 2024). 240 test clips each.
EMOBOX_FOLDS: dict[int, tuple[int, ...]] = {
    1: (1, 11, 20, 21),
    2: (4, 10, 12, 14),
    3: (8, 9, 19, 23),
    4: (3, 5, 7, 24),
    5: (2, 15, 16, 18),
    6: (6, 13, 17, 22),
}


@dataclass(frozen=True)
class Split:
    """One train/validation/test partition of a corpus, by clip stem."""

    protocol: str
    fold: int
    seed: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def masks(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boolean row masks ``(train, val, test)`` of ``df`` (a :func:`corpus.discover` table)."""
        stems = df["stem"]
        return (stems.isin(self.train).to_numpy(), stems.isin(self.val).to_numpy(),
                stems.isin(self.test).to_numpy())

    def frames(self, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """The rows of ``df`` in train, validation and test."""
        return tuple(df[mask] for mask in self.masks(df))

    def to_dict(self) -> dict:
        return {**asdict(self), "train": list(self.train), "val": list(self.val), "test": list(self.test)}


def random_80_20(df: pd.DataFrame, seed: int = 0, *, fold: int = 1, test_size: float = 0.2,
                 val_size: float = 0.1) -> Split:
    """Stratified (by emotion) random split: ``test_size`` of the clips for test, then ``val_size``
    of the remaining training clips for validation. Deterministic given ``seed``."""
    stems, labels = df["stem"].to_numpy(), df["emotion"].astype(str).to_numpy()
    train, test, y_train, _ = train_test_split(stems, labels, test_size=test_size, stratify=labels,
                                               random_state=seed)
    train, val = train_test_split(train, test_size=val_size, stratify=y_train, random_state=seed)
    return Split("random-80-20", fold, seed, tuple(sorted(train)), tuple(sorted(val)),
                 tuple(sorted(test)))


def actor_kfold(df: pd.DataFrame, seed: int = 0, *, n_val_actors: int = 2) -> list[Split]:
    """The EmoBox folds. Each fold's validation actors are drawn (seeded) from its training actors,
    alternating genders so that a pair holds one male and one female actor.

    Folds whose test actors are all absent from ``df`` (a partial corpus) are left out with a warning.
    """
    actors = set(df["actor"])
    splits = []
    for fold, test_actors in EMOBOX_FOLDS.items():
        if not actors & set(test_actors):
            warnings.warn(f"actor-kfold: fold {fold} skipped, none of its test actors {test_actors} "
                          "are in the corpus", stacklevel=2)
            continue
        rest = sorted(actors - set(test_actors))
        val_actors = _pick_val_actors(rest, n_val_actors, np.random.default_rng([seed, fold]))
        train_actors = [a for a in rest if a not in val_actors]
        splits.append(Split("actor-kfold", fold, seed, _stems_of(df, train_actors),
                            _stems_of(df, val_actors), _stems_of(df, test_actors)))
    return splits


def _stems_of(df: pd.DataFrame, actors) -> tuple[str, ...]:
    return tuple(sorted(df.loc[df["actor"].isin(list(actors)), "stem"]))


def _pick_val_actors(candidates: list[int], n: int, rng: np.random.Generator) -> list[int]:
    males = list(rng.permutation([a for a in candidates if a % 2 == 1]))
    females = list(rng.permutation([a for a in candidates if a % 2 == 0]))
    chosen = []
    while len(chosen) < n and (males or females):
        pool = males if (len(chosen) % 2 == 0 and males) or not females else females
        chosen.append(int(pool.pop(0)))
    if len(candidates) - len(chosen) < 1:
        raise ValueError(f"too few training actors ({len(candidates)}) for {n} validation actors")
    return sorted(chosen)


def make_splits(df: pd.DataFrame, protocol: str, seed: int = 0, n_repeats: int = 5) -> list[Split]:
    """All splits of ``protocol``: the six EmoBox folds, or ``n_repeats`` seeded random splits
    (seeds ``seed .. seed + n_repeats - 1``, numbered as folds 1..n)."""
    if protocol == "actor-kfold":
        return actor_kfold(df, seed)
    if protocol == "random-80-20":
        return [random_80_20(df, seed + i, fold=i + 1) for i in range(n_repeats)]
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")


def save_splits(splits: list[Split], path: str | Path) -> Path:
    """Write splits as JSON (clip stems), so every result can be traced to its exact partition."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps([s.to_dict() for s in splits], indent=1))
    return path


def load_splits(path: str | Path) -> list[Split]:
    """Read splits written by :func:`save_splits`."""
    records = json.loads(Path(path).read_text())
    return [Split(**{**r, **{k: tuple(r[k]) for k in ("train", "val", "test")}}) for r in records]
