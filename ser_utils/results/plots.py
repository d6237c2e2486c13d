"""Figures shared by the notebooks. Each function returns a matplotlib ``Figure``."""

from __future__ import annotations

from collections.abc import Sequence

import librosa
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from ..data.audio import SAMPLE_RATE, load_audio
from ..data.corpus import EMOTIONS

#: A column with more values than this gets a row of its own in :func:`count_bars`.
WIDE_PANEL = 8


def count_bars(meta: pd.DataFrame, columns: Sequence[str] = ("emotion", "actor", "gender", "intensity")):
    """Clip counts per value of each column, one panel per column: a column with many values (actors) on a
    row of its own, the others side by side, each panel at least wide enough for its title."""
    wide = [c for c in columns if meta[c].nunique() > WIDE_PANEL]
    narrow = [c for c in columns if c not in wide]
    rows = [[c] for c in wide] + ([narrow] if narrow else [])
    fig = plt.figure(figsize=(11, 3.0 * len(rows)), layout="constrained")
    for row, figure_row in zip(rows, fig.subfigures(len(rows), 1, squeeze=False)[:, 0], strict=True):
        widths = [max(meta[c].nunique(), 4) for c in row]
        for ax, column in zip(figure_row.subplots(1, len(row), width_ratios=widths, squeeze=False)[0], row,
                              strict=True):
            counts = meta[column].value_counts(sort=False).sort_index()
            ax.bar(counts.index.astype(str), counts.to_numpy(), color="#4C72B0")
            ax.set_title(f"clips per {column}")
            ax.set_xlabel(column)
            ax.set_ylabel("clips")
            if column not in wide and len(counts) > 4:  # emotion names side by side would overlap
                ax.tick_params(axis="x", rotation=35)
                plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    return fig


def duration_hist(meta: pd.DataFrame):
    """Histogram of clip durations in seconds, by emotion."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    sns.histplot(meta, x="duration", hue="emotion", multiple="stack", bins=30, ax=ax,
                 hue_order=EMOTIONS)
    ax.set_xlabel("duration (s)")
    fig.tight_layout()
    return fig


def log_mel_db(wave: np.ndarray, n_mels: int = 64) -> np.ndarray:
    """Log-mel spectrogram in dB (25 ms window, 10 ms hop at 16 kHz); shape ``(n_mels, frames)``."""
    mel = librosa.feature.melspectrogram(y=wave, sr=SAMPLE_RATE, n_fft=400, hop_length=160,
                                         n_mels=n_mels)
    return librosa.power_to_db(mel, ref=np.max)


def examples_per_emotion(meta: pd.DataFrame, actor: int | None = None, statement: int = 1):
    """Waveform and log-mel spectrogram of one clip per emotion (same actor and sentence)."""
    actor = actor if actor is not None else int(meta["actor"].min())
    rows = meta[(meta["actor"] == actor) & (meta["statement"] == statement)
                & (meta["intensity"] == "normal") & (meta["repetition"] == 1)]
    fig, axes = plt.subplots(2, len(EMOTIONS), figsize=(2.3 * len(EMOTIONS), 4.2), sharey="row")
    for col, emotion in enumerate(EMOTIONS):
        match = rows[rows["emotion"] == emotion]
        axes[0, col].set_title(emotion)
        if match.empty:
            continue
        wave = load_audio(match["path"].iloc[0])
        axes[0, col].plot(np.arange(len(wave)) / SAMPLE_RATE, wave, lw=0.4, color="#333")
        axes[1, col].imshow(log_mel_db(wave), origin="lower", aspect="auto", cmap="magma",
                            extent=(0, len(wave) / SAMPLE_RATE, 0, 64))
        axes[1, col].set_xlabel("s")
    axes[0, 0].set_ylabel("amplitude")
    axes[1, 0].set_ylabel("mel band")
    fig.suptitle(f"actor {actor:02d}, statement {statement}, normal intensity")
    fig.tight_layout()
    return fig


def by_emotion_box(stats: pd.DataFrame, columns: Sequence[str], labels: Sequence[str] | None = None):
    """Box plots of per-clip statistics by emotion, one panel per column."""
    fig, axes = plt.subplots(1, len(columns), figsize=(5.5 * len(columns), 3.4))
    for ax, column, label in zip(np.atleast_1d(axes), columns, labels or columns, strict=True):
        sns.boxplot(stats, x="emotion", y=column, order=EMOTIONS, ax=ax, color="#8fb3d9", fliersize=2)
        ax.set_ylabel(label)
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def confusion_heatmap(confusion: np.ndarray, labels: Sequence[str] = EMOTIONS, title: str = "",
                      normalize: bool = True, ax=None):
    """Confusion matrix as a heat map; with ``normalize`` each row (true class) in % of its clips."""
    matrix = 100 * confusion / np.maximum(confusion.sum(1, keepdims=True), 1) if normalize else confusion
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.6))
    sns.heatmap(matrix, annot=True, fmt=".0f" if normalize else "d", cmap="Blues", vmin=0,
                vmax=100 if normalize else None, xticklabels=labels, yticklabels=labels, cbar=False, ax=ax,
                annot_kws={"fontsize": 8})
    ax.set_xlabel("predicted" + (" (% of the true class's clips)" if normalize else ""))
    ax.set_ylabel("true")
    ax.tick_params(axis="x", rotation=45)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.set_title(title, fontsize=10)
    ax.figure.tight_layout()
    return ax.figure


def confusion_grid(confusions: dict[str, np.ndarray], labels: Sequence[str] = EMOTIONS):
    """Several row-normalised confusion matrices side by side, titled by their keys (e.g. a system's role
    and name on two lines)."""
    fig, axes = plt.subplots(1, len(confusions), figsize=(5.0 * len(confusions), 4.9), squeeze=False)
    for ax, (title, confusion) in zip(axes[0], confusions.items(), strict=True):
        confusion_heatmap(confusion, labels, title=title, ax=ax)
    fig.tight_layout()
    return fig


def protocol_confusions(system: str, confusions: dict[str, np.ndarray], uars: dict[str, float]):
    """One system's row-normalised confusion matrices side by side, one per protocol (title: its UAR)."""
    fig, axes = plt.subplots(1, len(confusions), figsize=(5.5 * len(confusions), 4.6), squeeze=False)
    for ax, (protocol, confusion) in zip(axes[0], confusions.items(), strict=True):
        confusion_heatmap(confusion, title=f"{system}, {protocol} (UAR {100 * uars[protocol]:.1f} %)", ax=ax)
    fig.tight_layout()
    return fig


def family_importance(drops: dict[str, pd.DataFrame]):
    """Permutation importance per feature family (``importance.fold_family_importance`` tables, one per
    system): the UAR drop when a family is shuffled, with its spread over folds."""
    fig, axes = plt.subplots(1, len(drops), figsize=(5.5 * len(drops), 4), squeeze=False)
    for ax, (system, frame) in zip(axes[0], drops.items(), strict=True):
        points = frame.iloc[::-1].assign(drop=100 * frame["uar_drop_mean"],
                                         spread=100 * frame["uar_drop_std_over_folds"])
        points.plot.barh(x="family", y="drop", xerr="spread", ax=ax, legend=False, color="#4C72B0")
        ax.set_title(system)
        ax.set_ylabel("feature family")
        ax.set_xlabel("UAR drop when shuffled (points, ± std over folds)")
    fig.tight_layout()
    return fig


#: Panel titles of the training curves; ``val_uar`` is drawn in %.
CURVE_TITLES = {"train_loss": "training loss", "val_loss": "validation loss", "val_uar": "validation UAR %",
                "val_accuracy": "validation accuracy %"}


def training_curves(histories: dict, metrics: tuple[str, ...] = ("train_loss", "val_loss", "val_uar")):
    """Fine-tuning curves: one row of panels per system (one panel per metric), one line per fold, the
    legend (folds) beside the last panel, whole epochs on the x axis.

    ``histories`` maps ``(system, protocol, fold)`` to an epoch log table (``log.jsonl``; or
    :func:`histories_of` the ``training_curves`` result table).
    """
    systems = sorted({key[0] for key in histories})
    rows, cols = max(len(systems), 1), len(metrics)
    fig, axes = plt.subplots(rows, cols, figsize=(3.9 * cols + 1.6, 3.0 * rows), squeeze=False,
                             layout="constrained")
    for row, system in zip(axes, systems, strict=False):
        for ax, metric in zip(row, metrics, strict=True):
            scale = 100 if metric.startswith("val_") and metric != "val_loss" else 1
            for (name, protocol, fold), log in sorted(histories.items()):
                if name == system and metric in log:
                    ax.plot(log["epoch"], scale * log[metric], marker=".", label=f"{protocol}, fold {int(fold)}")
            ax.set_title(f"{system}: {CURVE_TITLES.get(metric, metric.replace('_', ' '))}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        row[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


def histories_of(table: pd.DataFrame) -> dict:
    """The ``training_curves`` result table as :func:`training_curves` takes it."""
    return {key: group.sort_values("epoch") for key, group in table.groupby(["system", "protocol", "fold"])}


def layer_probe(probe: pd.DataFrame, title: str = ""):
    """UAR of a linear probe on each hidden layer (mean +/- std over folds)."""
    summary = probe.groupby("layer")["uar"].agg(["mean", "std"]) * 100
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    if title:
        ax.set_title(title)
    ax.errorbar(summary.index, summary["mean"], yerr=summary["std"], marker="o", capsize=3)
    ax.set_xlabel("hidden layer (0 = input to the transformer)")
    ax.set_ylabel("probe UAR % (± std over folds)")
    ax.set_xticks(summary.index)
    fig.tight_layout()
    return fig


def protocol_bars(gap: pd.DataFrame, metric_label: str = "accuracy", claimed: tuple[float, float] | None = None):
    """Per system (one row each, best unseen-actor score on top): the random split beside unseen actors
    (``results.leakage_gap`` output) in %, with the gap in points at the end of each row; ``claimed`` shades
    a published range (low, high, in %) for the random split."""
    order = gap.sort_values("actor-kfold", kind="stable")
    y = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(9.0, 0.34 * len(order) + 1.5), layout="constrained")
    ax.barh(y + 0.2, 100 * order["random-80-20"], 0.4, label="random-80-20 (actors shared)", color="#c44e52")
    ax.barh(y - 0.2, 100 * order["actor-kfold"], 0.4, label="actor-kfold (unseen actors)", color="#4c72b0")
    for yi, (high, value) in enumerate(zip(order["random-80-20"], order["gap"], strict=True)):
        ax.text(100 * high + 1, yi, f"{100 * value:+.0f}", va="center", fontsize=8)
    ax.set_yticks(y, order.index, fontsize=8)
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.set_xlabel(f"{metric_label} % (mean over folds or seeds; numbers: random split minus unseen actors, points)")
    ax.set_xlim(0, 105)
    ax.axvline(100 / 8, color="grey", lw=0.8, ls=":", label="chance (8 classes)")
    if claimed is not None:
        ax.axvspan(*claimed, color="orange", alpha=0.2, zorder=0,
                   label=f"claimed {claimed[0]:.0f}-{claimed[1]:.0f} % (random split)")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    return fig


def grouped_bars(frame: pd.DataFrame, ylabel: str, title: str = "", xlabel: str = ""):
    """Bars of a (systems x groups) table of fractions, drawn in %: one colour per system (the legend beside
    the axes, never over the bars), groups along x (labelled ``xlabel``)."""
    fig, ax = plt.subplots(figsize=(min(max(6.5, 0.3 * frame.shape[1] * max(len(frame), 1) + 2), 13), 3.8),
                           layout="constrained")
    width = 0.8 / max(len(frame), 1)
    x = np.arange(frame.shape[1])
    for i, (system, row) in enumerate(frame.iterrows()):
        ax.bar(x + (i - (len(frame) - 1) / 2) * width, 100 * row.to_numpy(dtype=float), width, label=system)
    labels = [str(int(c)) if isinstance(c, float) and float(c).is_integer() else str(c) for c in frame.columns]
    ax.set_xticks(x, labels, rotation=0 if frame.shape[1] <= 8 or max(map(len, labels)) <= 2 else 90)
    ax.set_xlim(-0.6, frame.shape[1] - 0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def enrolment_curve(curve: pd.DataFrame, plain_uar: float | None = None, title: str = ""):
    """Mean UAR over folds (with the fold range and ± std) against enrolment clips per speaker
    (``normalized_systems.enrolment_curve`` output; ``clips`` in order, "all" last), in %."""
    stats = curve.groupby("clips", sort=False)["uar"].agg(["mean", "std", "min", "max"]) * 100
    x = np.arange(len(stats))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.fill_between(x, stats["min"], stats["max"], color="#4c72b0", alpha=0.15, label="fold range")
    ax.errorbar(x, stats["mean"], yerr=stats["std"], marker="o", color="#4c72b0", capsize=3,
                label="mean ± std over folds")
    if plain_uar is not None:
        ax.axhline(100 * plain_uar, color="#c44e52", ls="--", lw=1, label="no normalization")
    ax.axhline(100 / 8, color="grey", lw=0.8, ls=":", label="chance (8 classes)")
    ax.set_xticks(x, stats.index)
    ax.set_xlabel("enrolment clips per speaker (unlabelled)")
    ax.set_ylabel("actor-kfold UAR (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def cross_corpus_bars(table: pd.DataFrame, metric: str = "uar"):
    """One panel per corpus: ``metric`` (%) per model and adaptation, for each label mode
    (``crosscorpus.cross_corpus_table`` output; "not run" rows are left out)."""
    done = table[table["status"] == "ok"]
    corpora = list(dict.fromkeys(done["corpus"]))
    fig, axes = plt.subplots(1, max(len(corpora), 1), figsize=(6.5 * max(len(corpora), 1), 3.6), squeeze=False)
    for ax, corpus in zip(axes[0], corpora, strict=False):
        part = done[done["corpus"] == corpus]
        frame = part.pivot_table(index=["model", "labels"], columns="adapt", values=metric, sort=False) * 100
        frame.plot.bar(ax=ax, rot=0)
        ax.set_xticklabels([f"{m}\n{lab} labels" for m, lab in frame.index], fontsize=8)
        ax.set_xlabel("")
        ax.set_ylabel(f"{metric.upper() if metric == 'uar' else metric} (%)")
        ax.set_title(corpus)
        ax.legend(title="adapt", fontsize=8)
    fig.tight_layout()
    return fig
