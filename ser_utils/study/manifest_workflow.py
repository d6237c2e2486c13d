"""Notebook 06's last section: a user's workflow on manifests, shown on the corpus the study already has.

Two ``path,label,speaker`` manifests are cut from the corpus by actor (training speakers and other,
held-out speakers); ``train`` (:func:`ser_utils.cli.train.train_model`, the command's own code) makes a model
folder from the first, and :func:`score_folder` scores it on the second as ``evaluate`` does
(:func:`ser_utils.study.crosscorpus.evaluate_manifest`). :func:`side_by_side` puts the two estimates in one
table: the cross-validated UAR ``train`` reports, and the UAR on speakers it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..core.atomic import atomic_to_csv
from ..data.corpus import quick_subset

#: The four classes of the example (a call-centre-like label set), and the actors of each part.
EXAMPLE_LABELS = ("angry", "happy", "sad", "neutral")
TRAIN_ACTORS = tuple(range(1, 13))
HELD_OUT_ACTORS = tuple(range(13, 25))


def write_manifests(meta: pd.DataFrame, folder: str | Path, *, labels: Sequence[str] = EXAMPLE_LABELS,
                    quick: bool = False) -> tuple[Path, Path]:
    """``train.csv`` (actors 1-12) and ``held-out.csv`` (actors 13-24) under ``folder``: the clips of
    ``labels`` of a ``corpus.discover`` table, with absolute paths and the actor as the speaker. ``quick``:
    :func:`~ser_utils.data.corpus.quick_subset` only (the smoke profile's size)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clips = quick_subset(meta) if quick else meta
    clips = clips[clips["emotion"].isin(labels)]
    written = []
    for name, actors in (("train", TRAIN_ACTORS), ("held-out", HELD_OUT_ACTORS)):
        part = clips[clips["actor"].astype(int).isin(actors)]
        table = pd.DataFrame({"path": [str(Path(p).resolve()) for p in part["path"]], "label": part["emotion"],
                              "speaker": [f"actor{int(a):02d}" for a in part["actor"]]})
        atomic_to_csv(table, folder / f"{name}.csv", index=False)
        written.append(folder / f"{name}.csv")
    return written[0], written[1]


def score_folder(model: str | Path, manifest: str | Path) -> dict:
    """The model folder's scores on ``manifest``, as ``python -m ser_utils evaluate`` computes them, and the
    manifest's number of speakers (``None`` without a speaker column)."""
    from ..serving.predict import EmotionRecognizer
    from .crosscorpus import evaluate_manifest

    result = evaluate_manifest(EmotionRecognizer.from_pretrained(str(model)), manifest)
    columns = pd.read_csv(manifest, dtype=str).rename(columns=lambda c: c.strip().lower())
    result["speakers"] = columns["speaker"].nunique() if "speaker" in columns else None
    return result


def side_by_side(trained: dict, held_out: dict) -> pd.DataFrame:
    """One row per estimate: ``train``'s cross-validated scores (``evaluation.json``) and the folder's scores
    on the held-out manifest; UAR, accuracy and macro-F1 in %, clips and speakers."""
    cv = trained["cv"]
    rows = [{"estimate": f"cross-validated on the training manifest ({cv['folds']} folds, "
                         + ("grouped by speaker)" if cv["grouped_by_speaker"] else "not grouped by speaker)"),
             "clips": trained["clips"], "speakers": trained["speakers"], **_percent(trained)},
            {"estimate": "held out: the folder on the other manifest (speakers never seen)",
             "clips": held_out["n"], "speakers": held_out["speakers"], **_percent(held_out)}]
    return pd.DataFrame(rows).set_index("estimate")


def _percent(scores: dict) -> dict:
    return {"UAR %": round(100 * scores["uar"], 1), "accuracy %": round(100 * scores["accuracy"], 1),
            "macro-F1 %": round(100 * scores["macro_f1"], 1)}
