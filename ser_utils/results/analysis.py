"""The comparisons notebook 05 makes: which systems it analyses, McNemar tests for the study's questions
(pretrained vs handcrafted, fine-tuned vs frozen, speaker-normalized vs plain), and the frozen heads'
inner-CV choices beside their post hoc test scores.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..core.names import speaker_use
from .display import format_p
from .tables import best_system, mcnemar


def frozen_counterpart(system: str) -> str:
    """The frozen project head of a fine-tuned system's family: ``whisper-project-ft-top1`` ->
    ``whisper-project-frozen``."""
    return f"{system.split('-', 1)[0]}-project-frozen"


#: The systems notebook 05 analyses, as (label, kind, inductive): the study's question first (the best
#: pretrained and handcrafted systems that use nothing of the test speaker), the transductive best after.
ANALYSED = (("best pretrained, uses no test-speaker audio", "pretrained", True),
            ("best handcrafted, uses no test-speaker audio", "baseline", True),
            ("best of all, transductive (all test-speaker clips)", None, False))


def analysed_systems(table: pd.DataFrame, protocol: str = "actor-kfold") -> dict[str, str]:
    """Label -> system for each of :data:`ANALYSED` that ran (a system already listed is not repeated: when
    the best of all is inductive it is shown once)."""
    chosen = {}
    for label, kind, inductive in ANALYSED:
        system = best_system(table, protocol, kind=kind, inductive=inductive)
        if system is not None and system not in chosen.values():
            chosen[label] = system
    return chosen


def _ran(table: pd.DataFrame, protocol: str) -> pd.Series:
    rows = table[(table["protocol"] == protocol) & (table["status"] == "ok")]
    return rows.set_index("system")["uar_mean"]


def comparison_pairs(table: pd.DataFrame, protocol: str = "actor-kfold") -> list[tuple[str, str, str]]:
    """The comparisons the study asks about, as ``(question, a, b)`` among the systems that ran: the best
    pretrained against the best handcrafted system (both using nothing of the test speaker), each fine-tuned
    system against its family's frozen project head, and each speaker-normalized system against the same
    system without normalization."""
    ran = _ran(table, protocol)
    pairs = []
    pretrained = best_system(table, protocol, kind="pretrained", inductive=True)
    handcrafted = best_system(table, protocol, kind="baseline", inductive=True)
    if pretrained and handcrafted:
        pairs.append(("pretrained vs handcrafted", pretrained, handcrafted))
    for system in ran.index:
        if re.search(r"-ft(-top\d+)?$", system) and frozen_counterpart(system) in ran.index:
            pairs.append(("fine-tuned vs frozen", system, frozen_counterpart(system)))
    normalized = [s for s in ran.sort_values(ascending=False, kind="stable").index if speaker_use(s) != "nothing"]
    for system in normalized:
        plain = system.split("+spknorm")[0]
        if plain in ran.index:
            label = "10 enrolment clips" if speaker_use(system) == "enrolment" else "all clips, transductive"
            pairs.append((f"speaker-normalized ({label}) vs plain", system, plain))
    return pairs


def significance_tests(table: pd.DataFrame, predictions: pd.DataFrame, protocol: str = "actor-kfold"
                       ) -> pd.DataFrame:
    """McNemar's exact test (:func:`mcnemar`) for each of :func:`comparison_pairs`, on the same test clips
    pooled over folds: both UARs (%), the clips each got right alone, and a readable p-value."""
    ran = _ran(table, protocol)
    predictions = predictions[predictions["protocol"] == protocol]
    rows = []
    for question, a, b in comparison_pairs(table, protocol):
        test = mcnemar(predictions, a, b)
        rows.append({"comparison": question, "system A": a, "system B": b,
                     "UAR % A": round(100 * ran[a], 1), "UAR % B": round(100 * ran[b], 1),
                     "clips": test["clips"], "only A right": test["a_only"], "only B right": test["b_only"],
                     "McNemar p": format_p(test["p_value"])})
    return pd.DataFrame(rows, columns=["comparison", "system A", "system B", "UAR % A", "UAR % B", "clips",
                                       "only A right", "only B right", "McNemar p"])


def finetuned_vs_frozen(metrics: pd.DataFrame, predictions: pd.DataFrame, protocol: str = "actor-kfold"
                        ) -> pd.DataFrame:
    """Each fine-tuned system that ran beside its family's frozen project head, on the same folds and clips:
    both UARs per fold (in %), their means, and McNemar's exact test on the pooled test predictions
    (:func:`mcnemar`; ``a``: the fine-tuned system). Empty when none ran."""
    ran = metrics[(metrics["status"] == "ok") & (metrics["protocol"] == protocol)]
    predictions = predictions[predictions["protocol"] == protocol]
    rows = []
    for system in sorted(s for s in ran["system"].unique() if "-ft" in s and "+" not in s):
        frozen = frozen_counterpart(system)
        if frozen not in set(ran["system"]):
            continue
        uar = {name: ran[ran["system"] == name].set_index("fold")["uar"] for name in (system, frozen)}
        folds = sorted(set(uar[system].index) & set(uar[frozen].index))
        row = {"fine-tuned": system, "frozen": frozen}
        row.update({f"fold {int(f)}": f"{100 * uar[system][f]:.1f} vs {100 * uar[frozen][f]:.1f}" for f in folds})
        row.update({"mean fine-tuned": round(100 * uar[system][folds].mean(), 1),
                    "mean frozen": round(100 * uar[frozen][folds].mean(), 1),
                    "folds better": int((uar[system][folds] > uar[frozen][folds]).sum())})
        test = mcnemar(predictions, system, frozen)
        row.update({"clips": test["clips"], "only fine-tuned right": test["a_only"],
                    "only frozen right": test["b_only"], "McNemar p": format_p(test["p_value"])})
        rows.append(row)
    return pd.DataFrame(rows)


def frozen_heads_summary(trials: pd.DataFrame, choices: pd.DataFrame, protocol: str = "actor-kfold") -> pd.DataFrame:
    """Test UAR (%, mean over folds) of each selected frozen system (``frozen_heads`` / ``frozen_selection``
    tables): the head chosen by inner cross-validation (the headline), then, post hoc, each candidate head
    alone (its penalty and variance still chosen by the inner CV) and the best single setting in hindsight."""
    out = {}
    for system, chosen in choices[choices["protocol"] == protocol].groupby("system", sort=False):
        tried = trials[(trials["protocol"] == protocol) & (trials["system"] == system)]
        own = tried.loc[tried.groupby(["head", "fold"], sort=False)["inner_uar"].idxmax()]  # its own setting
        settings = tried.assign(setting=_setting_label(tried)).groupby("setting", sort=False)["test_uar"].mean()
        row = {"inner-CV-chosen (headline)": f"{100 * chosen['test_uar'].mean():.1f}",
               "its inner-CV UAR": f"{100 * chosen['inner_uar'].mean():.1f}"}
        row.update({f"{head} (post hoc)": f"{100 * rows['test_uar'].mean():.1f}"
                    for head, rows in own.groupby("head", sort=False)})
        row["best setting (post hoc)"] = f"{100 * settings.max():.1f} ({settings.idxmax()})"
        out[system] = row
    return pd.DataFrame(out).T.rename_axis(index="system", columns=f"test UAR % ({protocol})")


def frozen_head_choices(choices: pd.DataFrame, protocol: str = "actor-kfold") -> pd.DataFrame:
    """Which head (penalty, variance) inner cross-validation chose per fold, with its inner-CV UAR: systems x
    folds."""
    first = choices[choices["protocol"] == protocol]
    label = _setting_label(first) + " (inner " + (100 * first["inner_uar"]).map("{:.1f}".format) + ")"
    return first.assign(choice=label).pivot(index="system", columns="fold", values="choice")


def frozen_heads_post_hoc(trials: pd.DataFrame, protocol: str = "actor-kfold") -> pd.DataFrame:
    """Post hoc: every candidate setting's mean inner-CV UAR and test UAR (%) over folds, per system; best
    test first. No choice reads the test column."""
    tried = trials[trials["protocol"] == protocol]
    table = (tried.assign(setting=_setting_label(tried)).groupby(["system", "setting"], sort=False)
             .agg(inner_uar=("inner_uar", "mean"), test_uar=("test_uar", "mean"), chosen=("chosen", "sum")))
    return table.sort_values(["system", "test_uar"], ascending=[True, False]).rename(
        columns={"chosen": "folds chosen"})


def _setting_label(rows: pd.DataFrame) -> pd.Series:
    """``head``, `` C=...`` / `` shrinkage=...`` / `` alpha=...`` for a penalised linear head (logistic, discriminant
    analysis, ridge), `` / variance`` with a normalization."""
    penalty = pd.to_numeric(rows["penalty"], errors="coerce")  # "" (an SGD head) read back as text
    head = rows["head"].astype(str)
    name = np.select([head.str.startswith("logreg"), head.str.startswith("lda")], [" C=", " shrinkage="], " alpha=")
    label = rows["head"].astype(str) + np.where(penalty.notna(), name + penalty.map("{:g}".format), "")
    return label + np.where(rows["variance"].astype(str) != "", " / " + rows["variance"].astype(str), "")
