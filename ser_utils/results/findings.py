"""What the study found, in words and one compact table, computed from the result files.

The front page (:func:`ser_utils.results.site.write_site`), the top of each report and notebook 05 all
say the study's answer through this module, so that no number a reader sees is typed by hand: every
number comes from a summary table (``comparison.csv``, or :func:`summary_of` on the per-fold metrics).

A system is placed by two things a reader must know before comparing numbers:

* its **kind**: ``handcrafted`` (features + scikit-learn classifier), ``frozen`` (a pretrained encoder
  whose weights stay fixed, a head trained on its embeddings) or ``fine-tuned`` (encoder layers trained);
* what it may **use of the test speaker** at test time: ``nothing`` (inductive), ``enrolment`` (statistics
  from N unlabelled clips per speaker, ``+spknorm-kN``) or ``all clips`` (every unlabelled clip of the
  speaker, test clips included, ``+spknorm``: transductive, an upper bound).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.names import speaker_use, system_kind, system_type

PRIMARY = "actor-kfold"
SECONDARY = "random-80-20"

#: What a system may use of the test speaker, in the order the headline table shows them.
USES = ("nothing", "enrolment", "all clips")
USE_TITLES = {"nothing": "Uses nothing of the test speaker",
              "enrolment": "Uses 10 unlabelled enrolment clips of each test speaker",
              "all clips": "Uses all of the test speaker's unlabelled clips (transductive)"}
KINDS = ("fine-tuned", "frozen", "handcrafted")
KIND_TITLES = {"fine-tuned": "pretrained, fine-tuned", "frozen": "pretrained, frozen",
               "handcrafted": "handcrafted features"}
#: Display names of the encoder families (``core.names.system_kind``).
FAMILY_NAMES = {"whisper": "Whisper-base", "wav2vec2": "wav2vec 2.0 base", "hubert": "HuBERT",
                "wavlm": "WavLM", "data2vec-audio": "data2vec-audio"}

#: Published results on exactly the ``actor-kfold`` folds (EmoBox), and the closest speaker-normalized
#: one (Pepino et al.: other split, 7 classes), as (what, use, UAR %, source). Numbers as their authors
#: report them; ``tables.PUBLISHED`` lists them all.
PUBLISHED_ROWS = (
    ("Whisper large v3 encoder, frozen (about 30x Whisper-base's encoder)", "nothing", 75.3, "EmoBox"),
    ("WavLM large, frozen", "nothing", 72.0, "EmoBox"),
    ("wav2vec 2.0 base, frozen", "nothing", 54.3, "EmoBox"),
    ("wav2vec 2.0 base, frozen, per-speaker normalization (other split: actors 23-24 tested, 7 classes)",
     "all clips", 84.3, "Pepino et al. 2021"),
)
SOURCES = {"EmoBox": "EmoBox leaderboard (Ma et al., Interspeech 2024), same six folds",
           "Pepino et al. 2021": "Pepino, Riera, Ferrer, Interspeech 2021"}


def describe(system: str) -> str:
    """A system name in words, e.g. ``whisper-project-frozen+spknorm-k10`` -> ``Whisper-base, frozen,
    project head, speaker-normalized (10 enrolment clips)``."""
    base, _, norm = system.partition("+spknorm")
    family = system_kind(system)
    if family == "baseline":
        features, _, classifier = base.partition("+")
        words = [f"{FEATURE_NAMES.get(features, features)} features", CLASSIFIER_NAMES.get(classifier, classifier)]
    else:
        _, recipe, mode = base.split("-", 2)
        partial = re.fullmatch(r"ft-top(\d+)", mode)
        how = (f"top {partial.group(1)} layer fine-tuned" if partial else
               "fine-tuned" if mode == "ft" else "frozen")
        words = [FAMILY_NAMES.get(family, family), how, RECIPE_NAMES.get(recipe, f"{recipe} recipe")]
    if system.endswith("+spknorm") or norm:
        clips = norm.removeprefix("-k")
        words.append(f"speaker-normalized ({clips} enrolment clips)" if clips else
                     "speaker-normalized (all clips, transductive)")
    return ", ".join(words)


FEATURE_NAMES = {"egemaps": "eGeMAPS", "mfcc-set": "MFCC set", "original-set": "original set"}
CLASSIFIER_NAMES = {"logreg": "logistic regression", "svm": "SVM", "rf": "random forest", "mlp": "MLP"}
RECIPE_NAMES = {"original": "original recipe head", "project": "project head",
                "selected": "head chosen by inner CV"}


def summary_of(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per-fold metrics (``store.read_metrics``) -> one row per system and protocol with the
    ``<metric>_mean`` / ``_std`` columns of ``comparison.csv`` (no bootstrap interval)."""
    from ..evaluation.metrics import summarise

    return summarise(metrics)


def load_summary(results_dir: str | Path, *, from_metrics: bool = False) -> pd.DataFrame | None:
    """``comparison.csv`` if notebook 05 wrote it (and not ``from_metrics``), else the per-fold metrics
    summarised; ``None``: none yet."""
    from .store import read_metrics, read_table

    table = None if from_metrics else read_table(results_dir, "comparison")
    if table is not None and not table.empty:
        return table
    try:
        metrics = read_metrics(results_dir)
    except (FileNotFoundError, ValueError):
        return None
    return None if metrics is None or metrics.empty else summary_of(metrics)


@dataclass(frozen=True)
class Result:
    """One system under one protocol: UAR (%) mean and std over folds (std ``nan`` for one fold)."""

    system: str
    uar: float
    std: float

    @property
    def cell(self) -> str:
        return pct(self.uar, self.std)


def pct(mean: float, std: float = float("nan")) -> str:
    """``82.6 ± 5.2`` (percent, one decimal), or ``82.6`` without a spread."""
    return f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} ± {std:.1f}"


def results(table: pd.DataFrame, protocol: str = PRIMARY) -> pd.DataFrame:
    """The systems that ran under ``protocol``, best UAR first, with ``use`` and ``type`` columns, UAR in %."""
    rows = table[(table["protocol"] == protocol) & (table["status"] == "ok")].copy()
    rows["use"] = rows["system"].map(speaker_use)
    rows["type"] = rows["system"].map(system_type)
    rows["uar"], rows["std"] = 100 * rows["uar_mean"].astype(float), 100 * rows["uar_std"].astype(float)
    return rows.sort_values("uar", ascending=False, kind="stable").reset_index(drop=True)


def best(table: pd.DataFrame, *, use: str | None = None, type_: str | None = None,
         protocol: str = PRIMARY) -> Result | None:
    """The best system (by mean UAR) of a ``use`` and ``type_`` under ``protocol``; ``None`` if none ran."""
    rows = results(table, protocol)
    if use is not None:
        rows = rows[rows["use"] == use]
    if type_ is not None:
        rows = rows[rows["type"].isin(["fine-tuned", "frozen"]) if type_ == "pretrained" else rows["type"] == type_]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return Result(row["system"], row["uar"], row["std"])


def result_of(table: pd.DataFrame, system: str, protocol: str = PRIMARY) -> Result | None:
    rows = results(table, protocol)
    rows = rows[rows["system"] == system]
    return None if rows.empty else Result(system, rows["uar"].iloc[0], rows["std"].iloc[0])


def headline_rows(table: pd.DataFrame) -> list[dict]:
    """The front page's table: per test-speaker use, the best system of each kind, then the published rows
    of that use. Each row: ``use``, ``kind`` (or ``published``), ``system``, ``what``, ``primary`` and
    ``secondary`` (UAR % cells), ``source`` (published rows)."""
    rows = []
    for use in USES:
        for kind in KINDS:
            found = best(table, use=use, type_=kind)
            if found is None:
                continue
            other = result_of(table, found.system, SECONDARY)
            rows.append({"use": use, "kind": KIND_TITLES[kind], "system": found.system, "what": describe(found.system),
                         "primary": found.cell, "secondary": other.cell if other else "-", "source": ""})
        for what, published_use, uar, source in PUBLISHED_ROWS:
            if published_use == use:
                rows.append({"use": use, "kind": "published", "system": "", "what": what, "primary": f"{uar:.1f}",
                             "secondary": "", "source": source})
    return rows


def not_run(table: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """Systems without a number, grouped by reason (the part of the note that says why): ``[(reason,
    systems)]``, most systems first."""
    rows = table[table["status"] != "ok"]
    groups: dict[str, set[str]] = {}
    for system, note in zip(rows["system"], rows["note"].fillna(""), strict=True):
        reason = _reason(str(note))
        groups.setdefault(reason, set()).add(system)
    return sorted(((r, sorted(s)) for r, s in groups.items()), key=lambda item: -len(item[1]))


def _reason(note: str) -> str:
    """The cause in a not-run note, without the normalization notes ``system_note`` adds before it."""
    parts = [p.strip() for p in note.split(";") if p.strip()]
    causes = [p for p in parts if not p.startswith(("transductive:", "speaker-normalized:", "frozen head chosen",
                                                    "partial fine-tuning"))]
    return "; ".join(causes) or "no reason recorded"


def takeaways(table: pd.DataFrame) -> list[str]:
    """The study's answers in short sentences with numbers (UAR %, actor-kfold unless said), only those the
    results support: pretrained vs handcrafted, fine-tuned vs frozen, the random split's over-statement,
    speaker normalization, and the published reference."""
    sentences = []
    top, craft = best(table, use="nothing", type_="pretrained"), best(table, use="nothing", type_="handcrafted")
    if top and craft:
        sentences.append(
            f"<b>Pretrained beats handcrafted by {top.uar - craft.uar:.1f} points</b> on unseen actors: "
            f"{top.cell} % UAR for {describe(top.system)} (<code>{top.system}</code>) against {craft.cell} % for "
            f"{describe(craft.system)} (<code>{craft.system}</code>).")
    sentences += _finetuning_sentence(table)
    sentences += _leakage_sentence(table, top, craft)
    sentences += _normalization_sentence(table, top)
    if top:
        published = ", ".join(f"{what.split(' (')[0].removesuffix(', frozen').removesuffix(' encoder')} {uar:.1f} %"
                              for what, use, uar, source in PUBLISHED_ROWS if source == "EmoBox")
        sentences.append(f"<b>Published, same folds</b> (EmoBox, frozen encoders): {published}; here "
                         f"{top.uar:.1f} % without any audio of the test speaker.")
    return sentences


def _finetuning_sentence(table: pd.DataFrame) -> list[str]:
    tuned = best(table, use="nothing", type_="fine-tuned")
    if tuned is None:
        return []
    frozen = result_of(table, re.sub(r"-ft(-top\d+)?$", "-frozen", tuned.system))
    if frozen is None:
        return [f"<b>Fine-tuning</b> ({describe(tuned.system)}) reaches {tuned.cell} % UAR."]
    spread = max(tuned.std, frozen.std)
    verdict = "less" if abs(tuned.uar - frozen.uar) < spread else "more"
    gain = tuned.uar - frozen.uar
    verb = "adds" if gain >= 0 else "loses"
    return [f"<b>Fine-tuning {verb} {abs(gain):.1f} points</b> against the frozen encoder with the same "
            f"head ({tuned.uar:.1f} against {frozen.uar:.1f} %), {verdict} than the spread between folds "
            f"(± {spread:.1f})."]


def _leakage_sentence(table: pd.DataFrame, top: Result | None, craft: Result | None) -> list[str]:
    pairs = [(r, result_of(table, r.system, SECONDARY)) for r in (top, craft) if r]
    pairs = [(a, b) for a, b in pairs if b]
    if not pairs:
        return []
    parts = [f"{b.uar:.1f} against {a.uar:.1f} % ({b.uar - a.uar:+.1f})" for a, b in pairs]
    return [f"<b>The random 80/20 split over-states</b> (every actor in training and test): {' and '.join(parts)} "
            f"for the same system{'s' if len(pairs) > 1 else ''}."]


def _normalization_sentence(table: pd.DataFrame, top: Result | None) -> list[str]:
    enrolled, everything = best(table, use="enrolment", type_="pretrained"), best(table, use="all clips",
                                                                                  type_="pretrained")
    if not (top and (enrolled or everything)):
        return []
    parts = []
    if enrolled:
        parts.append(f"10 unlabelled enrolment clips per speaker lift it to {enrolled.uar:.1f} % "
                     f"({enrolled.uar - top.uar:+.1f})")
    if everything:
        parts.append(f"all of a test speaker's clips (transductive, an upper bound) to {everything.uar:.1f} %")
    return [f"<b>Speaker normalization</b>: {'; '.join(parts)}."]


def title(table: pd.DataFrame | None) -> str:
    """The study's title, naming the encoders that actually produced numbers."""
    ran = [] if table is None else sorted({system_kind(s) for s in table.loc[table["status"] == "ok", "system"]}
                                          - {"baseline"})
    encoders = " and ".join(FAMILY_NAMES.get(f, f) for f in ran) or "pretrained speech encoders"
    return f"Speech emotion recognition on RAVDESS: {encoders} against handcrafted features, on unseen actors"


def _plain(sentence: str) -> str:
    """A takeaway sentence as Markdown: ``<b>`` -> ``**``, ``<code>`` -> backticks."""
    for tag, mark in (("b", "**"), ("code", "`")):
        sentence = sentence.replace(f"<{tag}>", mark).replace(f"</{tag}>", mark)
    return sentence


def readme_section(table: pd.DataFrame, provenance: dict) -> str:
    """Alias of :func:`readme_markdown` (the name notebook 05 uses)."""
    return readme_markdown(table, provenance)


def readme_markdown(table: pd.DataFrame, provenance: dict) -> str:
    """The README's and model card's results section: the takeaway and the headline table as Markdown,
    from the same rows as the front page, with the run's provenance and the links to the reports."""
    lines = [f"*Generated by `make all`* (profile `{provenance['profile']}`, {provenance['device']}, commit "
             f"`{provenance['commit']}`, {provenance['date']}). UAR in % (chance 12.5 %), mean ± std over the six "
             "folds of actors never seen in training (`actor-kfold`, EmoBox's folds), and on the original write-up's "
             "random 80/20 split (`random-80-20`: the same actors in training and test).", ""]
    lines += [f"* {_plain(s)}" for s in takeaways(table)]
    lines += ["", "| what it may use of the test speaker | kind | system | actor-kfold UAR | random-80-20 UAR |",
              "|---|---|---|---|---|"]
    use = {"nothing": "nothing", "enrolment": "10 enrolment clips", "all clips": "all clips (transductive)"}
    for row in headline_rows(table):
        if row["kind"] == "published":
            lines.append(f"| {use[row['use']]} | *published ({row['source']})* | *{row['what']}* | "
                         f"*{row['primary']}* | |")
        else:
            lines.append(f"| {use[row['use']]} | {row['kind']} | `{row['system']}` | {row['primary']} | "
                         f"{row['secondary']} |")
    for reason, systems in not_run(table):
        lines += ["", f"Not run: {len(systems)} system{'s' if len(systems) > 1 else ''} ({', '.join(systems)}): "
                      f"{reason}."]
    lines += ["", "Every system with accuracy, macro-F1 and 95 % intervals: [reports/results.html]"
                  "(reports/results.html); the front page: [reports/index.html](reports/index.html)."]
    return "\n".join(lines)
