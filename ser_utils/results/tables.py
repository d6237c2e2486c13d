"""Tables across systems: the comparison table with bootstrap confidence intervals, the leakage gap,
the best system, error analysis and a significance test (notebooks 03 and 05). Everything is computed
from fold metrics and per-clip predictions (``evaluate.summarise``, ``read_metrics``,
``read_predictions``), never typed in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from ..core.atomic import atomic_write_text
from ..core.names import speaker_use, system_kind, system_note
from ..data.corpus import EMOTIONS
from ..evaluation.metrics import METRICS, metrics_from_confusion, summarise
from .display import (  # noqa: F401 (re-exported: notebooks and tests read them from tables)
    DISPLAY_NAMES,
    WHOLE_NUMBERS,
    display_name,
    for_display,
    format_p,
    pair_confusion_table,
    percent_table,
    role_label,
)

#: Published reference points, shown beside the measured numbers and marked as published (each row
#: names its paper in ``source``).
PUBLISHED = pd.DataFrame([
    ("wav2vec 2.0 base, frozen, last layer + small head", "EmoBox 6 folds, 8 classes", 54.3, 55.4,
     "EmoBox leaderboard (Ma et al. 2024)"),
    ("HuBERT base, frozen", "EmoBox 6 folds, 8 classes", 65.4, 66.2, "EmoBox leaderboard (Ma et al. 2024)"),
    ("WavLM base, frozen", "EmoBox 6 folds, 8 classes", 61.6, 62.1, "EmoBox leaderboard (Ma et al. 2024)"),
    ("data2vec 2.0 large, frozen", "EmoBox 6 folds, 8 classes", 71.2, 71.6, "EmoBox leaderboard (Ma et al. 2024)"),
    ("WavLM large, frozen", "EmoBox 6 folds, 8 classes", 72.0, 72.2, "EmoBox leaderboard (Ma et al. 2024)"),
    ("Whisper large v3 encoder, frozen (every clip padded to 30 s, last layer trimmed to the clip's frames)",
     "EmoBox 6 folds, 8 classes", 75.3, 75.9, "EmoBox leaderboard (Ma et al. 2024)"),
    ("wav2vec 2.0 base, frozen, weighted layers, per-speaker normalization",
     "actors 01-20 / 21-22 / 23-24, 7 classes, speech + song", 84.3, 83.0, "Pepino, Riera, Ferrer, Interspeech 2021"),
    ("same, global normalization", "actors 01-20 / 21-22 / 23-24, 7 classes, speech + song", 75.7, 74.2,
     "Pepino, Riera, Ferrer, Interspeech 2021"),
    ("eGeMAPS + MLP", "actors 01-20 / 21-22 / 23-24, 7 classes, speech + song", 57.0, 59.0,
     "Pepino, Riera, Ferrer, Interspeech 2021"),
], columns=["system", "protocol", "uar", "accuracy", "source"])

#: The original write-up's claims (accuracy, %, random 80/20 split), as (low, high).
CLAIMS = {"wav2vec2": (87.0, 90.0), "baseline": (65.0, 72.0)}


def bootstrap_ci(predictions: pd.DataFrame, labels: Sequence[str] = EMOTIONS, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CI of the mean-over-folds metrics, resampling test clips within each fold.

    ``predictions``: one system under one protocol (columns ``fold, emotion, predicted``).
    """
    rng = np.random.default_rng(seed)
    k = len(labels)
    index = {name: i for i, name in enumerate(labels)}
    per_fold = []
    for _, fold in predictions.groupby("fold"):
        codes = fold["emotion"].map(index).to_numpy() * k + fold["predicted"].map(index).to_numpy()
        draws = codes[rng.integers(0, len(codes), size=(n_boot, len(codes)))]
        offsets = (np.arange(n_boot) * k * k)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * k * k).reshape(n_boot, k, k)
        per_fold.append(metrics_from_confusion(counts))
    tail = (1 - level) / 2 * 100
    return {m: tuple(np.percentile(np.mean([f[m] for f in per_fold], axis=0), [tail, 100 - tail]))
            for m in METRICS}


def comparison_table(metrics: pd.DataFrame, predictions: pd.DataFrame, n_boot: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Every system x protocol: mean and std over folds and a 95 % bootstrap CI for each metric.

    Systems that were not run keep one row with ``status="not run"`` and the reason in ``note``.
    """
    table = summarise(metrics)
    table.insert(1, "kind", table["system"].map(system_kind))
    for metric in METRICS:
        table[f"{metric}_ci_low"] = np.nan
        table[f"{metric}_ci_high"] = np.nan
    for row, (system, protocol) in enumerate(zip(table["system"], table["protocol"], strict=True)):
        chosen = predictions[(predictions["system"] == system) & (predictions["protocol"] == protocol)]
        if table.loc[row, "status"] != "ok" or chosen.empty:
            continue
        for metric, (low, high) in bootstrap_ci(chosen, n_boot=n_boot, seed=seed).items():
            table.loc[row, f"{metric}_ci_low"], table.loc[row, f"{metric}_ci_high"] = low, high
    return table.sort_values(["kind", "system", "protocol"], ignore_index=True)


def leakage_gap(table: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per system: ``random-80-20`` minus ``actor-kfold`` (mean over folds), the over-statement of the
    random split for unseen speakers."""
    wide = table[table["status"] == "ok"].pivot(index="system", columns="protocol", values=f"{metric}_mean")
    if not {"random-80-20", "actor-kfold"} <= set(wide.columns):
        return pd.DataFrame(columns=["random-80-20", "actor-kfold", "gap"])
    wide = wide[["random-80-20", "actor-kfold"]].dropna()
    return wide.assign(gap=wide["random-80-20"] - wide["actor-kfold"]).sort_values("gap", ascending=False)


def best_system(table: pd.DataFrame, protocol: str = "actor-kfold", metric: str = "uar", *,
                kind: str | None = None, inductive: bool = False) -> str | None:
    """The system with the highest mean ``metric`` under ``protocol`` in a summary table
    (:func:`ser_utils.evaluation.metrics.summarise` or :func:`comparison_table`), optionally of one ``kind``
    (``"baseline"``, ``"wav2vec2"``, ``"whisper"``: :func:`ser_utils.core.names.system_kind`, or
    ``"pretrained"``: any encoder family) and, with ``inductive``, among the systems that use nothing of the
    test speaker (:func:`speaker_use`); ``None`` if none ran. The earlier row wins a tie."""
    rows = table[(table["protocol"] == protocol) & (table["status"] == "ok")]
    kinds = rows["system"].map(system_kind)
    if kind == "pretrained":
        rows = rows[kinds != "baseline"]
    elif kind is not None:
        rows = rows[kinds == kind]
    if inductive:
        rows = rows[rows["system"].map(speaker_use) == "nothing"]
    return None if rows.empty else rows.sort_values(f"{metric}_mean", ascending=False, kind="stable")["system"].iloc[0]


def results_table(summary: pd.DataFrame, protocols: Sequence[str] = ("random-80-20", "actor-kfold")) -> pd.DataFrame:
    """One row per system of a summary table (:func:`ser_utils.evaluation.metrics.summarise`); columns
    ``(protocol, metric)`` holding ``"mean ± std"`` in percent."""
    table = {}
    for row in summary.itertuples(index=False):
        for metric in METRICS:
            mean, std = getattr(row, f"{metric}_mean"), getattr(row, f"{metric}_std")
            cell = f"{100 * mean:.1f} ± {100 * std:.1f}" if np.isfinite(std) else f"{100 * mean:.1f}"
            table.setdefault(row.system, {})[(row.protocol, metric)] = cell
    frame = pd.DataFrame.from_dict(table, orient="index")
    columns = [(p, m) for p in protocols for m in METRICS if (p, m) in frame.columns]
    return frame[pd.MultiIndex.from_tuples(columns, names=["protocol", "metric"])]


def protocol_gap(summary: pd.DataFrame) -> pd.DataFrame:
    """Per system of a summary table: mean accuracy and UAR (%) under ``random-80-20`` and
    ``actor-kfold``, and the gap in percentage points (how much the random split over-states
    accuracy on unseen actors), in the table's system order."""
    columns = {}
    for metric in ("accuracy", "uar"):
        gap = leakage_gap(summary, metric)
        columns.update({f"{metric} random-80-20": gap["random-80-20"], f"{metric} actor-kfold": gap["actor-kfold"],
                        f"{metric} gap (pp)": gap["gap"]})
    frame = pd.DataFrame(columns)
    order = [s for s in dict.fromkeys(summary["system"]) if s in frame.index]
    return (100 * frame.reindex(order)).rename_axis("system").round(1)


def confusion_share(predictions: pd.DataFrame, true: str, predicted: str) -> float:
    """Share of the clips of class ``true`` predicted as ``predicted``."""
    of_class = predictions[predictions["emotion"] == true]
    return float((of_class["predicted"] == predicted).mean()) if len(of_class) else np.nan


def pair_confusions(predictions: pd.DataFrame, pairs: Sequence[tuple[str, str]] = (("calm", "neutral"),
                                                                                   ("sad", "fearful"))) -> pd.DataFrame:
    """For each system and pair (a, b): the share of a's clips predicted as b (``a_as_b``) and of b's
    clips predicted as a (``b_as_a``)."""
    rows = [{"system": system, "pair": f"{a}/{b}", "a_as_b": confusion_share(group, a, b),
             "b_as_a": confusion_share(group, b, a)}
            for system, group in predictions.groupby("system") for a, b in pairs]
    return pd.DataFrame(rows)


def per_group_accuracy(predictions: pd.DataFrame, corpus: pd.DataFrame, by: str) -> pd.DataFrame:
    """Accuracy per system and value of a corpus column (``actor``, ``gender``, ``intensity``, ...)."""
    joined = predictions.merge(corpus[["stem", by]].drop_duplicates("stem"), on="stem", how="left",
                               suffixes=("_pred", "")) if by not in predictions.columns else predictions
    joined = joined.assign(correct=joined["emotion"] == joined["predicted"])
    return joined.groupby(["system", by])["correct"].mean().unstack(by)


def per_class_f1(predictions: pd.DataFrame, labels: Sequence[str] = EMOTIONS) -> pd.DataFrame:
    """F1 of each class per system (clips pooled over folds)."""
    from sklearn.metrics import f1_score

    return pd.DataFrame({system: f1_score(group["emotion"], group["predicted"], labels=list(labels), average=None,
                                          zero_division=0)
                         for system, group in predictions.groupby("system")}, index=list(labels)).T


def mcnemar(predictions: pd.DataFrame, system_a: str, system_b: str) -> dict:
    """Exact McNemar test of two systems on the same test clips (one protocol, each clip once).

    Returns the counts of clips only ``a`` got right (``a_only``) and only ``b`` got right
    (``b_only``), and the two-sided p-value of the binomial test on those discordant pairs.
    """
    keys = ["protocol", "fold", "stem"]
    both = predictions[predictions["system"] == system_a].merge(
        predictions[predictions["system"] == system_b], on=keys, suffixes=("_a", "_b"))
    right_a = both["emotion_a"] == both["predicted_a"]
    right_b = both["emotion_b"] == both["predicted_b"]
    a_only, b_only = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p_value = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"system_a": system_a, "system_b": system_b, "clips": len(both), "a_only": a_only, "b_only": b_only,
            "p_value": float(p_value)}


def format_cell(mean: float, std: float, low: float, high: float, scale: float = 100.0) -> str:
    """``"61.2 ± 3.4 [58.0, 64.1]"`` (percent), or ``"not run"``."""
    if np.isnan(mean):
        return "not run"
    spread = "" if np.isnan(std) else f" ± {std * scale:.1f}"
    interval = "" if np.isnan(low) else f" [{low * scale:.1f}, {high * scale:.1f}]"
    return f"{mean * scale:.1f}{spread}{interval}"


def run_table(metrics: pd.DataFrame, protocols: Sequence[str] = ("actor-kfold", "random-80-20")) -> pd.DataFrame:
    """A notebook's view of the systems it ran (fold metrics, ``evaluate.read_metrics`` form): UAR and accuracy
    in % per protocol, mean ± std over folds or seeds, one row per system; a system that did not run says why
    in ``note`` and shows no number. Best first (UAR of the first protocol); systems that did not run last."""
    rows = {}
    summary = summarise(metrics)
    key = summary[summary["protocol"] == protocols[0]].set_index("system")["uar_mean"]
    order = key.reindex(summary["system"].unique()).fillna(-1).sort_values(ascending=False, kind="stable").index
    summary = summary.set_index("system").loc[order].reset_index()
    for r in summary.itertuples(index=False):
        row = rows.setdefault(r.system, {f"{p} {m}": "" for p in protocols for m in ("UAR", "accuracy")} | {"note": ""})
        if r.status != "ok":
            row["note"] = r.note
            continue
        for metric, label in (("uar", "UAR"), ("accuracy", "accuracy")):
            if r.protocol in protocols:
                row[f"{r.protocol} {label}"] = format_cell(getattr(r, f"{metric}_mean"), getattr(r, f"{metric}_std"),
                                                           np.nan, np.nan)
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("system")


def headline_table(table: pd.DataFrame) -> pd.DataFrame:
    """The reader's table: one row per system, accuracy and UAR (%) per protocol as mean ± std [95 % CI],
    best actor-kfold UAR first; systems that did not run last."""
    uar = table[table["protocol"] == "actor-kfold"].groupby("system")["uar_mean"].max()
    order = uar.reindex(table["system"].unique()).fillna(-1).sort_values(ascending=False, kind="stable").index
    rows = []
    for system in order:
        group = table[table["system"] == system]
        row = {"system": system, "kind": system_kind(system)}
        for protocol in ("actor-kfold", "random-80-20"):
            match = group[group["protocol"] == protocol]
            for metric in ("uar", "accuracy"):
                label = f"{protocol} {'UAR' if metric == 'uar' else 'accuracy'}"
                if match.empty:
                    row[label] = "-"
                    continue
                r = match.iloc[0]
                row[label] = format_cell(r[f"{metric}_mean"], r[f"{metric}_std"], r[f"{metric}_ci_low"],
                                         r[f"{metric}_ci_high"])
        notes = [system_note(system), *group.loc[group["status"] != "ok", "note"].dropna().unique()]
        row["note"] = "; ".join(n for n in notes if n)
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(frame: pd.DataFrame) -> str:
    """A plain GitHub-flavoured markdown table (no extra dependency)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def replace_marked(path: str | Path, marker: str, text: str) -> bool:
    """Replace what stands between ``<!-- marker -->`` and ``<!-- /marker -->`` in a file.

    Returns whether the file changed. Raises ``ValueError`` if the markers are missing.
    """
    path = Path(path)
    content = path.read_text()
    pattern = re.compile(rf"(<!-- {re.escape(marker)} -->\n).*?(\n<!-- /{re.escape(marker)} -->)", re.S)
    if not pattern.search(content):
        raise ValueError(f"{path}: markers <!-- {marker} --> ... <!-- /{marker} --> not found")
    updated = pattern.sub(lambda m: m.group(1) + text.strip() + m.group(2), content)
    if updated != content:
        atomic_write_text(path, updated)  # README / MODEL_CARD: never left half-written
    return updated != content


#: Which measured systems answer which claim of the original write-up.
CLAIM_SYSTEMS = {
    # Fine-tuning, as the write-up did it (wav2vec2, whole model) and as this CPU can (Whisper's top layers).
    "wav2vec2": ("w2v2-original-ft", "w2v2-project-ft", "whisper-project-ft-top*"),
    "baseline": ("original-set+rf", "original-set+logreg"),
}


def claims_vs_measured(table: pd.DataFrame) -> pd.DataFrame:
    """The original write-up's accuracy claims (random 80/20) beside what was measured for the systems
    that reproduce them, under the same split and under unseen actors."""
    from fnmatch import fnmatchcase

    rows = []
    for kind, (low, high) in CLAIMS.items():
        names = [s for pattern in CLAIM_SYSTEMS[kind]
                 for s in ([pattern] if "*" not in pattern else sorted(n for n in table["system"].unique()
                                                                       if fnmatchcase(n, pattern)))]
        for system in names:
            match = table[table["system"] == system].set_index("protocol")
            row = {"claim": f"{kind}: {low:.0f}-{high:.0f} % accuracy (random 80/20)", "system": system}
            for protocol in ("random-80-20", "actor-kfold"):
                if protocol in match.index and match.loc[protocol, "status"] == "ok":
                    r = match.loc[protocol]
                    row[f"{protocol} accuracy"] = format_cell(r["accuracy_mean"], r["accuracy_std"],
                                                              r["accuracy_ci_low"], r["accuracy_ci_high"])
                else:
                    row[f"{protocol} accuracy"] = "not run" if len(match) else "-"
            rows.append(row)
    return pd.DataFrame(rows)


#: The measured systems closest to each published row (same encoder or features, used the same way), shown
#: beside it; a published row without one stands alone.
PUBLISHED_COUNTERPARTS = {
    "wav2vec 2.0 base, frozen, last layer + small head": ("w2v2-original-frozen", "w2v2-project-frozen"),
    "Whisper large v3 encoder, frozen (every clip padded to 30 s, last layer trimmed to the clip's frames)":
        ("whisper-original-frozen", "whisper-project-frozen", "whisper-selected-frozen"),
    "wav2vec 2.0 base, frozen, weighted layers, per-speaker normalization":
        ("w2v2-project-frozen+spknorm", "whisper-project-frozen+spknorm"),
    "same, global normalization": ("w2v2-project-frozen", "whisper-project-frozen"),
    "eGeMAPS + MLP": ("egemaps+mlp",),
}
#: What differs between a published row and the measured rows beside it.
COUNTERPART_NOTES = {
    "Whisper large v3 encoder, frozen (every clip padded to 30 s, last layer trimmed to the clip's frames)":
        "Whisper-base here (a far smaller encoder), each clip at its own length",
    **{system: "other protocol: here the six EmoBox folds, 8 classes, speech only"
       for system in ("wav2vec 2.0 base, frozen, weighted layers, per-speaker normalization",
                      "same, global normalization", "eGeMAPS + MLP")},
}


def published_vs_measured(table: pd.DataFrame, protocol: str = "actor-kfold") -> pd.DataFrame:
    """Each published reference point (:data:`PUBLISHED`, marked ``published``) followed by the measured
    rows that match it (:data:`PUBLISHED_COUNTERPARTS`, marked ``measured here``: UAR and accuracy in % under
    ``protocol``, mean ± std over folds, or "not run" and why)."""
    rows = []
    for ref in PUBLISHED.itertuples(index=False):
        rows.append({"row": "published", "system": ref.system, "protocol": ref.protocol, "UAR %": f"{ref.uar:.1f}",
                     "accuracy %": f"{ref.accuracy:.1f}", "source or note": ref.source})
        for system in PUBLISHED_COUNTERPARTS.get(ref.system, ()):
            match = table[(table["system"] == system) & (table["protocol"] == protocol)]
            if match.empty:
                continue
            r = match.iloc[0]
            ran = r["status"] == "ok"
            cells = {m: format_cell(r[f"{m}_mean"], r[f"{m}_std"], np.nan, np.nan) if ran else "not run"
                     for m in ("uar", "accuracy")}
            # A reason that did not run is said in full in the comparison table: its first clause here.
            notes = [COUNTERPART_NOTES.get(ref.system, ""),
                     system_note(system) if ran else str(r["note"]).split(" (")[0]]
            rows.append({"row": "measured here", "system": system, "protocol": f"{protocol} (EmoBox folds)",
                         "UAR %": cells["uar"], "accuracy %": cells["accuracy"],
                         "source or note": "; ".join(n for n in notes if n)})
    return pd.DataFrame(rows)
