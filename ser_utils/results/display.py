"""Result tables as a reader reads them (never for a file): human column names with their unit, fractions in
%, integer folds and epochs, readable p-values. Files keep their raw column names, which other code reads.
"""

from __future__ import annotations

import pandas as pd

from ..core.names import speaker_use


def format_p(p_value: float) -> str:
    """A p-value as a reader reads it: ``"p = 0.31"``, ``"p = 0.012"`` (two significant digits) or
    ``"p < 0.001"``."""
    if p_value < 0.001:
        return "p < 0.001"
    return f"p = {min(p_value, 1.0):.2g}" if p_value < 0.995 else "p = 1.0"


#: How a raw column (or axis) name of a result table is shown: ``(human name with its unit, factor)``. A
#: factor of 100 marks a fraction, shown in %. Only what is displayed is renamed: files keep the raw names
#: that other code reads.
DISPLAY_NAMES: dict[str, tuple[str, float]] = {
    **{f"{m}{suffix}": (f"{label} %{extra}", 100.0)
       for m, label in (("accuracy", "accuracy"), ("uar", "UAR"), ("macro_f1", "macro-F1"))
       for suffix, extra in (("", ""), ("_mean", ""), ("_std", " std"), ("_ci_low", " CI low"),
                             ("_ci_high", " CI high"))},
    **{f"{m} {p}": (f"{label} % {p}", 1.0) for m, label in (("accuracy", "accuracy"), ("uar", "UAR"))
       for p in ("random-80-20", "actor-kfold")},
    **{f"{p} {m}": (f"{p} {m} %", 1.0) for p in ("actor-kfold", "random-80-20") for m in ("UAR", "accuracy")},
    "accuracy gap (pp)": ("accuracy gap (points)", 1.0), "uar gap (pp)": ("UAR gap (points)", 1.0),
    "val_uar": ("validation UAR %", 100.0), "val_accuracy": ("validation accuracy %", 100.0),
    "inner_cv": ("inner folds cut", 1.0),
    "test_uar": ("test UAR %", 100.0), "inner_uar": ("inner-CV UAR %", 100.0),
    "inner_uar_std": ("inner-CV UAR std (points)", 100.0), "inner_folds": ("inner folds", 1.0),
    "inner_grouped": ("inner folds by actor", 1.0), "penalty": ("penalty (ridge alpha / logistic C)", 1.0),
    "val_loss": ("validation loss", 1.0), "train_loss": ("training loss", 1.0),
    "uar_drop_mean": ("UAR drop when shuffled (points)", 100.0),
    "uar_drop_std_over_folds": ("std over folds (points)", 100.0),
    "n_features": ("columns", 1.0), "n_clips": ("clips", 1.0), "n_test": ("test clips", 1.0),
    "frames": ("frames per clip", 1.0), "best_epoch": ("best epoch", 1.0), "train_layers": ("top layers trained", 1.0),
    "lr_backbone": ("encoder learning rate", 1.0), "lr_head": ("head learning rate", 1.0),
    "silence_share": ("silence %", 100.0), "active_rms_dbfs": ("active level (dBFS)", 1.0),
    "peak_dbfs": ("peak (dBFS)", 1.0), "duration": ("duration (s)", 1.0), "p_value": ("McNemar p", 1.0),
    "a_only": ("only A right", 1.0), "b_only": ("only B right", 1.0), "system_a": ("system A", 1.0),
    "system_b": ("system B", 1.0), "params": ("setting", 1.0),
}


#: Columns that hold whole numbers (shown as integers even when pandas read them as floats).
WHOLE_NUMBERS = frozenset({"fold", "folds", "epoch", "best_epoch", "count", "clips", "n_clips", "n_test", "columns",
                           "n_features", "layer", "train_layers", "seed", "actor", "repetition", "inner_folds",
                           "epochs", "folds chosen"})


def display_name(name):
    """The name a reader sees for a raw column or axis name: :data:`DISPLAY_NAMES`, else a snake_case name with
    spaces (``vocal_channel`` -> ``vocal channel``); others unchanged."""
    if not isinstance(name, str):
        return name
    return DISPLAY_NAMES[name][0] if name in DISPLAY_NAMES else name.replace("_", " ")


def for_display(frame: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """A result table as a reader reads it (never for a file): names from :data:`DISPLAY_NAMES` with their
    unit, fractions in % rounded to ``digits``, whole numbers (folds, epochs, counts) as integers, p-values
    as ``p = 0.31``, True/False as yes/no, and pandas' row numbers (an unnamed integer index) dropped."""
    out = _drop_row_numbers(frame.copy())
    for position, column in enumerate(out.columns):
        labels = column if isinstance(column, tuple) else (column,)
        key = next((label for label in labels if isinstance(label, str) and label in DISPLAY_NAMES), labels[-1])
        factor = DISPLAY_NAMES[key][1] if key in DISPLAY_NAMES else 1.0
        out.isetitem(position, _display_values(out.iloc[:, position], key, factor, digits))
    out.index = _integral_levels(out.index)
    out.columns = _integral_levels(out.columns)
    out = out.rename(columns=display_name)
    out.columns.names = [display_name(n) for n in out.columns.names]
    out.index.names = [display_name(n) for n in out.index.names]
    return out


def _display_values(values: pd.Series, key, factor: float, digits: int) -> pd.Series:
    if key == "p_value":
        return values.map(format_p)
    if pd.api.types.is_bool_dtype(values):
        return values.map({True: "yes", False: "no"})
    if not pd.api.types.is_numeric_dtype(values):
        return values
    if factor != 1.0:
        return (values * factor).round(digits)
    finite = values.dropna()
    if (key in WHOLE_NUMBERS and pd.api.types.is_float_dtype(values) and len(finite)
            and (finite == finite.round()).all()):
        return values.astype("Int64")  # a fold, an epoch or a count read back as float (NaN elsewhere)
    return values


def _integral_levels(index: pd.Index) -> pd.Index:
    """Float labels that are whole numbers (``fold 1.0``) as integers, at every level."""
    def fix(level: pd.Index) -> pd.Index:
        if pd.api.types.is_float_dtype(level) and len(level) and (level == level.round()).all():
            return level.astype(int)
        return level

    if isinstance(index, pd.MultiIndex):
        return index.set_levels([fix(level) for level in index.levels])
    return fix(index).rename(index.name)


def _drop_row_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Without pandas' row numbers: an unnamed integer level of a row MultiIndex is dropped; a plain
    ``RangeIndex`` gives way to the first column."""
    index = frame.index
    if isinstance(index, pd.MultiIndex):
        numbers = [i for i, (name, level) in enumerate(zip(index.names, index.levels, strict=True))
                   if name is None and pd.api.types.is_integer_dtype(level)]
        return frame.droplevel(numbers) if numbers and len(numbers) < index.nlevels else frame
    if isinstance(index, pd.RangeIndex) and index.name is None and frame.shape[1] > 1:
        return frame.set_index(frame.columns[0])
    return frame


def percent_table(frame: pd.DataFrame, what: str, digits: int = 1) -> pd.DataFrame:
    """A table of fractions (e.g. accuracy per actor, systems x actors) in %, its columns labelled
    ``what`` (e.g. ``"accuracy %"``), whole-number labels as integers."""
    out = (100 * frame.astype(float)).round(digits)
    out.index, out.columns = _integral_levels(out.index), _integral_levels(out.columns)
    out.columns.name = f"{what}: {out.columns.name}" if out.columns.name else what
    out.index.name = display_name(out.index.name)
    return out


def role_label(system: str) -> str:
    """A system's name with what it uses of the test speaker when that is anything (legends, titles):
    ``whisper-project-frozen+spknorm (transductive)``."""
    use = speaker_use(system)
    return system if use == "nothing" else f"{system} ({'transductive' if use == 'all clips' else 'enrolment'})"


def pair_confusion_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """:func:`pair_confusions` as a reader reads it: one row per system, one column per direction
    (``calm → neutral %``: the share of calm clips predicted as neutral)."""
    rows = {}
    for r in pairs.itertuples(index=False):
        a, b = r.pair.split("/")
        rows.setdefault(r.system, {})[f"{a} → {b} %"] = round(100 * r.a_as_b, 1)
        rows[r.system][f"{b} → {a} %"] = round(100 * r.b_as_a, 1)
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("system")
