"""Files in and out of the ``predict`` and ``evaluate`` commands: the audio files of folders, ``path,label``
manifests, output paths checked before any work, and the per-file lines, CSV rows and strict JSON that
:class:`~ser_utils.predict.EmotionRecognizer`'s predictions are written as."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import soundfile as sf

if TYPE_CHECKING:
    from .predict import FilePrediction

AUDIO_EXAMPLES = (".wav", ".flac", ".ogg", ".mp3")


def check_output(path: str | Path | None, option: str) -> None:
    """Fail early (``ValueError`` naming ``option``) for an output file that could not be written:
    a missing or read-only folder, or a path that is a folder. ``None`` and ``"-"`` (stdout) pass."""
    if path is None or str(path) == "-":
        return
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a directory, expected a file name")
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{option} {path}: not writable")


def audio_files(paths: Iterable[str | Path]) -> tuple[list[Path], dict[str, str]]:
    """Expand files and folders (recursively) into audio files soundfile can read, in a stable order.

    Returns ``(files, failures)``; a path that does not exist, or a folder without audio files, is a
    failure. Inside folders, files are recognised by extension (``soundfile.available_formats()``); a
    file named explicitly is always tried, so a bad one gets a clear error instead of being ignored.
    """
    extensions = {f".{ext.lower()}" for ext in sf.available_formats()} | {".mp3", ".ogg", ".opus"}
    files, failures = [], {}
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
            if not found:
                failures[str(path)] = (f"{path}: no audio files found in this folder (looked for "
                                       f"{', '.join(sorted(AUDIO_EXAMPLES))}, ...)")
            files += found
        elif path.exists():
            files.append(path)
        else:
            failures[str(path)] = f"{path}: no such file or directory"
    return files, failures


class NothingScoredError(ValueError):
    """No file of a manifest could be scored; ``failures`` keeps each file's reason."""

    def __init__(self, message: str, failures: dict[str, str]):
        super().__init__(message)
        self.failures = failures


def read_manifest(manifest: str | Path, labels: Sequence[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a ``path,label`` CSV (other columns, e.g. ``speaker``, are kept); relative paths are taken
    relative to the manifest's folder.

    Returns the usable rows (one per distinct ``(path, label)``: repeated rows are scored once, with a
    warning) and, per unusable row (empty path or label), the reason. Raises ``ValueError`` naming the
    file for a manifest that cannot be used at all (empty, no ``path,label`` columns, unknown labels).
    """
    manifest = Path(manifest)
    try:
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{manifest}: empty file (expected a CSV with columns path,label)") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ValueError(f"{manifest}: not a readable CSV ({err})") from None
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise ValueError(f"{manifest}: needs columns path,label (missing {', '.join(sorted(missing))})")
    table = table.apply(lambda column: column.str.strip())
    table["label"] = table["label"].str.lower()
    table.index = table.index + 2  # the CSV line of each row (line 1 is the header)
    empty = (table["path"] == "") | (table["label"] == "")
    failures = {f"{manifest}:{line}": f"{manifest} line {line}: empty {'path' if row.path == '' else 'label'} "
                "cell, row left out" for line, row in table[empty].iterrows()}
    table = table[~empty]
    unknown = sorted(set(table["label"]) - set(labels))
    if unknown:
        raise ValueError(f"{manifest}: labels {unknown} are not among the model's {list(labels)}")
    table["path"] = [str(p if Path(p).is_absolute() else manifest.parent / p) for p in table["path"]]
    repeated = table.duplicated(["path", "label"])
    if repeated.any():
        lines = ", ".join(map(str, table.index[repeated][:5]))
        warnings.warn(f"{manifest}: {int(repeated.sum())} repeated row(s) (lines {lines}"
                      f"{', ...' if repeated.sum() > 5 else ''}) are scored once", stacklevel=2)
    return table[~repeated].reset_index(drop=True), failures


def format_prediction(prediction: FilePrediction) -> str:
    """One line per file: path, top emotion, and every class's probability."""
    probs = " ".join(f"{k}={v:.3f}" for k, v in prediction.probabilities.items())
    return f"{prediction.path}\t{prediction.emotion}\t{probs}"


def predictions_table(predictions: Sequence[FilePrediction]) -> pd.DataFrame:
    """Per-window rows plus one ``aggregate`` row per file (column ``row``), for CSV output."""
    frames = []
    for prediction in predictions:
        windows = prediction.windows.assign(file=prediction.path, row="window")
        aggregate = pd.DataFrame([{"file": prediction.path, "row": "aggregate", "start": 0.0,
                                   "end": prediction.duration, "silent": False, **prediction.probabilities}])
        frames += [windows, aggregate]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not table.empty:
        labels = list(predictions[0].probabilities)
        voiced = ~table["silent"].astype(bool)
        table["emotion"] = ""
        table.loc[voiced, "emotion"] = table.loc[voiced, labels].idxmax(axis=1)
        table = table[["file", "row", "start", "end", "silent", "emotion", *labels]]
    return table


def to_json(predictions: Sequence[FilePrediction]) -> str:
    """Strict JSON (silent windows' probabilities are ``null``, never ``NaN``)."""
    return strict_json([p.to_dict() for p in predictions])


def strict_json(value) -> str:
    """JSON that strict parsers accept: non-finite floats anywhere in ``value`` become ``null``."""
    def clean(item):
        if isinstance(item, dict):
            return {k: clean(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v) for v in item]
        if isinstance(item, float | np.floating):
            return float(item) if math.isfinite(item) else None
        if isinstance(item, np.integer):
            return int(item)
        return item

    return json.dumps(clean(value), indent=1, allow_nan=False)
