"""Exported models on other corpora: grouping, adaptation and the cross-corpus protocol.

* :func:`speaker_groups` / :func:`manifest_groups` - the groups of ``--adapt``: ``none`` (no groups),
  ``corpus`` (every file of the call is one group) or ``speaker`` (a ``speaker`` column of the
  manifest, or for ``predict`` a ``--speaker-pattern`` regular expression on the path).
* :func:`manifest_probabilities` then :func:`score_manifest` - one model, one adaptation, one
  manifest; ``labels="manifest"`` decides only among the classes the manifest has (probabilities
  renormalized over them), the usual cross-corpus protocol; ``labels="model"`` among all of the
  model's classes (a prediction of a class the manifest lacks is an error, column ``other``).
* :func:`evaluate_manifest` - both steps (the ``evaluate`` command).
* :func:`cross_corpus_table` - every model x adaptation x label mode on every manifest (notebook 06).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import ADAPTATIONS, LABEL_MODES, SettingError
from ..core.console import one_line
from ..core.names import MODEL_FOLDERS
from ..evaluation.metrics import score
from ..features.normalization import GroupError, describe
from ..serving.predict import DEFAULT_HOP, DEFAULT_WINDOW, EmotionRecognizer, check_window
from ..serving.prediction_io import NothingScoredError, read_manifest

CROSS_CORPUS_COLUMNS = ["corpus", "model", "adapt", "labels", "status", "n", "classes", "accuracy", "uar",
                        "macro_f1", "note"]


def _check_adapt(adapt: str) -> None:
    if adapt not in ADAPTATIONS:
        raise SettingError(f"adaptation {adapt!r}: choose one of {', '.join(ADAPTATIONS)}", "adapt")


def speaker_groups(paths: Sequence[str | Path], adapt: str, pattern: str | None = None) -> list[str] | None:
    """Groups of files for ``predict``: ``None`` (``none``), one group (``corpus``), or the speaker
    named by ``pattern``'s first capture group (else its whole match) in each path (``speaker``)."""
    _check_adapt(adapt)
    if adapt == "none":
        return None
    if adapt == "corpus":
        return ["corpus"] * len(paths)
    if not pattern:
        raise GroupError("speaker adaptation needs a regular expression naming the speaker in each path, "
                         "e.g. 'Actor_(\\d+)'", "speaker_pattern")
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise GroupError(f"{pattern!r} is not a regular expression ({err})", "speaker_pattern") from None
    groups, misses = [], []
    for path in map(str, paths):
        match = regex.search(path)
        speaker = (match.group(1) if regex.groups else match.group(0)) if match else None
        if not speaker:  # no match, or an empty (or unmatched optional) group: no speaker to group by
            misses.append(path)
        groups.append(speaker)
    if misses:
        raise GroupError(f"{pattern!r} finds no speaker in {len(misses)} of {len(groups)} path(s): {_some(misses)}",
                         "speaker_pattern")
    return groups


def _some(items: Sequence, limit: int = 5) -> str:
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(one_line(str(item)) for item in items[:limit]) + more


def manifest_groups(table: pd.DataFrame, adapt: str, manifest: str | Path = "manifest") -> list[str] | None:
    """Groups of a manifest's rows: ``None``, one group, or its ``speaker`` column."""
    _check_adapt(adapt)
    if adapt == "none":
        return None
    if adapt == "corpus":
        return ["corpus"] * len(table)
    if "speaker" not in table.columns:
        raise GroupError(f"{manifest}: speaker adaptation needs a speaker column (or the whole corpus as one group)")
    speakers = table["speaker"].fillna("").astype(str).str.strip()
    empty = speakers == ""
    if empty.any():  # never one group named "" mixing real speakers
        raise GroupError(f"{manifest}: speaker adaptation needs a speaker on every row; {int(empty.sum())} have none "
                         f"(line(s) {_some(list(table.index[empty]))}): fill them in, or adapt the whole corpus as one "
                         "group")
    return speakers.tolist()


def manifest_probabilities(recognizer: EmotionRecognizer, manifest: str | Path, *, adapt: str = "none",
                           window: float | None = DEFAULT_WINDOW,
                           hop: float | None = DEFAULT_HOP) -> tuple[pd.DataFrame, dict[str, str]]:
    """The manifest's rows that could be scored, with one probability column per model label, and
    the failures (path -> reason). Raises ``GroupError`` for a grouping that cannot work."""
    table, failures = read_manifest(manifest, recognizer.labels)
    groups = manifest_groups(table, adapt, manifest)
    # Each file is scored once, so it counts once in its group, even when listed under two labels.
    rows = table.assign(file=[os.path.realpath(p) for p in table["path"]],
                        group=groups if groups is not None else "")
    if groups is not None:
        split = rows.groupby("file")["group"].nunique()
        if (split > 1).any():
            lines = list(rows.index[rows["file"].isin(split.index[split > 1])])
            raise GroupError(f"{manifest}: a file under two speakers (lines {_some(lines)}); a clip can count "
                             "for one speaker only")
    files = rows.drop_duplicates("file")
    predictions, unreadable = recognizer.predict_files(files["path"], window=window, hop=hop,
                                                       groups=None if groups is None else list(files["group"]))
    failures.update(unreadable)
    file_of = dict(zip(files["path"], files["file"], strict=True))
    probabilities = pd.DataFrame([{**p.probabilities, "warning": p.warning} for p in predictions],
                                 index=[file_of[p.path] for p in predictions])
    scored = rows[rows["file"].isin(probabilities.index)]
    if scored.empty:
        raise NothingScoredError(f"{manifest}: none of the {len(table)} file(s) could be scored", failures)
    joined = probabilities.loc[scored["file"]].reset_index(drop=True)
    return pd.concat([scored.drop(columns=["file", "group"]).reset_index(drop=True), joined], axis=1), failures


def score_manifest(scored: pd.DataFrame, model_labels: Sequence[str], labels: str = "model") -> dict:
    """Accuracy, UAR, macro-F1 and confusion of :func:`manifest_probabilities`' table.

    ``labels="manifest"``: decide among the classes present in the manifest only (probabilities
    renormalized over them); ``"model"``: among all of the model's classes.
    """
    if labels not in LABEL_MODES:
        raise SettingError(f"label mode {labels!r}: choose one of {', '.join(LABEL_MODES)}", "labels")
    model_labels = list(model_labels)
    present = [c for c in model_labels if c in set(scored["label"])]
    candidates = present if labels == "manifest" else model_labels
    probs = scored[candidates].to_numpy(dtype=float)
    probs = probs / np.clip(probs.sum(1, keepdims=True), 1e-12, None)
    predicted = np.asarray(candidates)[probs.argmax(1)]
    result = score(scored["label"], predicted, model_labels)
    rows = [model_labels.index(c) for c in present]
    confusion = pd.DataFrame(result.confusion[rows][:, rows], index=present, columns=present)
    confusion["other"] = result.confusion[rows].sum(axis=1) - confusion.sum(axis=1)
    return {"n": result.n, "accuracy": result.accuracy, "uar": result.uar, "macro_f1": result.macro_f1,
            "classes": present, "confusion": confusion, "predicted": predicted}


def evaluate_manifest(recognizer: EmotionRecognizer, manifest: str | Path, *, adapt: str = "none",
                      labels: str = "model", window: float | None = DEFAULT_WINDOW,
                      hop: float | None = DEFAULT_HOP) -> dict:
    """Scores of a model on a ``path,label[,speaker]`` manifest with an adaptation and a label mode.

    Returns ``n, accuracy, uar, macro_f1, classes, confusion`` (a DataFrame), ``failures``,
    ``warnings`` (files whose level makes their scores doubtful, one line each) and ``settings`` (what
    was used: adapt, labels, window, hop, the model's normalization). Files that cannot be read are
    reported and left out; when none can be, ``prediction_io.NothingScoredError``
    keeps every file's reason.
    """
    check_window(window, hop)
    if labels not in LABEL_MODES:
        raise SettingError(f"label mode {labels!r}: choose one of {', '.join(LABEL_MODES)}", "labels")
    scored, failures = manifest_probabilities(recognizer, manifest, adapt=adapt, window=window, hop=hop)
    result = score_manifest(scored, recognizer.labels, labels)
    result.pop("predicted")
    settings = {"manifest": str(manifest), "adapt": adapt, "labels": labels, "window": window, "hop": hop,
                "model_description": recognizer.describe(), "model_normalization": describe(recognizer.normalization)}
    level = dict.fromkeys(w for w in scored["warning"] if w)  # per file once, in manifest order
    return {**result, "failures": failures, "warnings": list(level), "settings": settings}


def model_folders(models_dir: str | Path) -> dict[str, Path]:
    """The exported model folders under ``models_dir`` (name -> folder), in a stable order."""
    return {n: Path(models_dir) / n for n in MODEL_FOLDERS if (Path(models_dir) / n).is_dir()}


def cross_corpus_table(models: dict[str, str | Path], manifests: Sequence[str | Path], *,
                       adaptations: Sequence[str] = ADAPTATIONS, label_modes: Sequence[str] = LABEL_MODES,
                       window: float | None = DEFAULT_WINDOW, hop: float | None = DEFAULT_HOP) -> pd.DataFrame:
    """Every model x adaptation x label mode on every manifest: one row each (:data:`CROSS_CORPUS_COLUMNS`).

    A combination that cannot run (e.g. a speaker-normalized model without groups, ``speaker`` on a
    manifest without speakers, adaptation of a wav2vec2 checkpoint) gets ``status`` "not run" and
    the reason in ``note``, never a number. The audio of a manifest is scored once per model and
    adaptation; both label modes decide from the same probabilities.
    """
    rows = []
    for manifest in manifests:
        corpus = Path(manifest).stem if Path(manifest).stem != "manifest" else Path(manifest).parent.name
        for name, folder in models.items():
            recognizer = EmotionRecognizer.from_pretrained(folder)
            for adapt in adaptations:
                base = {"corpus": corpus, "model": name, "adapt": adapt}
                try:
                    scored, failures = manifest_probabilities(recognizer, manifest, adapt=adapt, window=window,
                                                              hop=hop)
                except GroupError as err:
                    rows += [{**base, "labels": m, "status": "not run", "note": str(err)} for m in label_modes]
                    continue
                note = f"{len(failures)} file(s) could not be scored" if failures else ""
                for mode in label_modes:
                    result = score_manifest(scored, recognizer.labels, mode)
                    rows.append({**base, "labels": mode, "status": "ok", "n": result["n"],
                                 "classes": len(result["classes"]), "accuracy": result["accuracy"],
                                 "uar": result["uar"], "macro_f1": result["macro_f1"], "note": note})
    return pd.DataFrame(rows, columns=CROSS_CORPUS_COLUMNS).astype({"n": "Int64", "classes": "Int64"})


__all__ = ["ADAPTATIONS", "CROSS_CORPUS_COLUMNS", "LABEL_MODES", "cross_corpus_table", "evaluate_manifest",
           "manifest_groups", "manifest_probabilities", "model_folders", "score_manifest", "speaker_groups"]
