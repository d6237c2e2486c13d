"""Files in and out of the ``predict`` and ``evaluate`` commands: the audio files of folders, ``path,label``
manifests, output paths checked before any work, and the per-file lines, CSV rows and strict JSON that
:class:`~ser_utils.serving.predict.EmotionRecognizer`'s predictions are written as."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..core.console import one_line
from ..data.scan import AUDIO_EXTENSIONS, walk_files

if TYPE_CHECKING:
    from .predict import FilePrediction

AUDIO_EXAMPLES = (".aiff", ".flac", ".mp3", ".ogg", ".wav")
#: Longest path a manifest cell may hold, and longest name in it, in bytes (Linux's PATH_MAX and NAME_MAX): a
#: longer one names no file.
MAX_PATH_BYTES, MAX_NAME_BYTES = 4096, 255
#: Largest CSV cell the manifest's row check reads (Python's csv module stops at 131,072 characters with
#: a traceback; pandas reads any): a longer path cell is then one bad row, as any other.
CSV_FIELD_LIMIT = 2**31 - 1
#: The CSV's columns before the per-label probabilities.
TABLE_COLUMNS = ["file", "row", "start", "end", "silent", "emotion", "warning"]


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
    """Expand files and folders (at any depth) into audio files soundfile can read, in a stable order.

    Returns ``(files, failures)``; a path that does not exist, or a folder without audio files, is a
    failure. Inside folders, files are recognised by extension (:data:`ser_utils.data.scan.AUDIO_EXTENSIONS`,
    from ``soundfile.available_formats()``); a file named explicitly is always tried, so a bad one gets a
    clear error instead of being ignored. A file reached twice (named again, inside a folder also given,
    through a link) is listed once, with a warning: it must not count twice in an adaptation group.
    """
    files, failures, first, repeats = [], {}, {}, {}
    for path in map(Path, paths):
        try:
            path.stat()
        except OSError as err:  # a name too long raised from is_dir below, a traceback
            failures[str(path)] = f"{one_line(str(path))}: {err.strerror.lower() if err.strerror else err}"
            continue
        if path.is_dir():
            found = sorted(walk_files(path, AUDIO_EXTENSIONS))
            if not found:
                failures[str(path)] = (f"{path}: no audio files found in this folder (looked for "
                                       f"{', '.join(AUDIO_EXAMPLES)} and every other format soundfile reads)")
        elif path.exists():
            found = [path]
        else:
            failures[str(path)] = f"{path}: no such file or directory"
            found = []
        for file in found:
            key = os.path.realpath(file)
            if key in first:
                repeats[key] = repeats.get(key, 1) + 1
            else:
                first[key] = file
                files.append(file)
    for key, times in repeats.items():
        warnings.warn(f"{one_line(str(first[key]))}: given {times} times (named again, inside a folder also "
                      "given, or through a link); scored once", stacklevel=2)
    return files, failures


def check_outputs_apart(outputs: dict[str, str | Path | None], inputs: Iterable[str | Path]) -> None:
    """Fail early (``ValueError`` naming the option) when an output file is one of ``inputs`` or the same
    file as another output, by name, through a symlink or as a hard link: writing it would destroy an
    input, or keep only one of two outputs. Keys are the options (``"--csv"``); ``None`` and ``"-"`` pass."""
    named = [(option, Path(path)) for option, path in outputs.items() if path is not None and str(path) != "-"]
    taken = {}
    for path in map(Path, inputs):
        taken.setdefault(_identity(path), path)
    for index, (option, path) in enumerate(named):
        identity = _identity(path)
        if identity in taken:
            same = "" if taken[identity] == path else f" (the same file as {taken[identity]})"
            raise ValueError(f"{option} {path}: is an input of this run{same}; writing it would destroy it, "
                             "choose another file name")
        for other_option, other in named[:index]:
            if _identity(other) == identity:
                raise ValueError(f"{option} {path} and {other_option} {other} are the same file: one output "
                                 "would replace the other")


def _identity(path: Path) -> tuple:
    # An existing file is its device and inode (any name, link or hard link); a new one its real path.
    try:
        status = os.stat(path)
        return (status.st_dev, status.st_ino)
    except OSError:
        return (os.path.realpath(path),)


class NothingScoredError(ValueError):
    """No file of a manifest could be scored; ``failures`` keeps each file's reason."""

    def __init__(self, message: str, failures: dict[str, str]):
        super().__init__(message)
        self.failures = failures


def read_manifest(manifest: str | Path, labels: Sequence[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a ``path,label`` CSV (other columns, e.g. ``speaker``, are kept); relative paths are taken
    relative to the manifest's folder.

    Returns the usable rows, indexed by their CSV line (one per distinct file and label: repeated rows
    are scored once, with a warning) and, per unusable row (empty path or label), the reason. Column
    names are matched without case and spaces. Raises ``ValueError`` naming the file for a manifest
    that cannot be used at all (empty, ragged, no ``path,label`` columns, unknown labels).
    """
    manifest = Path(manifest)
    table = _manifest_rows(manifest)
    table["label"] = table["label"].str.lower()
    reasons = {line: _bad_row(row.path, row.label) for line, row in table.iterrows()}
    failures = {f"{manifest}:{line}": f"{manifest} line {line}: {why}, row left out"
                for line, why in reasons.items() if why}
    table = table[[not reasons[line] for line in table.index]]
    unknown = sorted(set(table["label"]) - set(labels))
    if unknown:
        named = ", ".join(repr(u[:40]) for u in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ValueError(f"{manifest}: labels [{one_line(named)}] are not among the model's {list(labels)}")
    table["path"] = _resolved(manifest, table["path"])
    # The same file under other spellings (./a.wav, a link) is the same row.
    repeated = table.assign(file=[os.path.realpath(p) for p in table["path"]]).duplicated(["file", "label"])
    if repeated.any():
        lines = ", ".join(map(str, table.index[repeated][:5]))
        warnings.warn(f"{manifest}: {int(repeated.sum())} repeated row(s) (lines {lines}"
                      f"{', ...' if repeated.sum() > 5 else ''}) are scored once", stacklevel=2)
    return table[~repeated], failures


def _bad_row(path: str, label: str) -> str:
    """Why a manifest row cannot be scored at all (``""``: it can be tried): an empty cell, or a path
    cell that names no file (a NUL byte, which no file name holds, aborted the whole run; a cell longer
    than any path)."""
    if path == "" or label == "":
        return f"empty {'path' if path == '' else 'label'} cell"
    if "\0" in path:
        return "a NUL byte in the path cell (no file name holds one)"
    size = len(path.encode(errors="replace"))
    if size > MAX_PATH_BYTES:
        return f"path cell of {size:,} bytes, longer than any file path ({MAX_PATH_BYTES:,})"
    name = max((len(part.encode(errors="replace")) for part in Path(path).parts), default=0)
    if name > MAX_NAME_BYTES:
        return f"a name of {name:,} bytes in the path cell, longer than any file name ({MAX_NAME_BYTES})"
    return ""


def _manifest_rows(manifest: Path) -> pd.DataFrame:
    """A manifest's cells, stripped, columns matched case- and space-insensitively (``Path``, `` label ``),
    indexed by CSV line (the header is line 1). ``ValueError`` naming the file when it is not usable."""
    try:
        with warnings.catch_warnings():  # more cells than the header on the first row: pandas would index by them
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(manifest, dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.ParserWarning:
        raise _ragged(manifest, *_first_ragged_line(manifest)) from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{manifest}: empty file (expected a CSV with columns path,label)") from None
    except pd.errors.ParserError as err:
        ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if ragged:
            fields, line, saw = ragged.groups()
            raise _ragged(manifest, line, saw, fields) from None
        raise ValueError(f"{manifest}: not a readable CSV ({' '.join(str(err).split())})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{manifest}: not a readable CSV (not UTF-8 text: {err.reason} at byte {err.start})") from None
    line, saw, fields = _first_ragged_line(manifest)
    if line:  # fewer cells than the header: pandas fills the missing ones with nothing, silently
        raise _ragged(manifest, line, saw, fields)
    table.columns = [str(c).strip().lower() for c in table.columns]
    doubled = sorted({c for c in table.columns if list(table.columns).count(c) > 1})
    if doubled:
        raise ValueError(f"{manifest}: column(s) {', '.join(doubled)} appear twice (names are matched without case "
                         "and spaces)")
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise ValueError(f"{manifest}: needs columns path,label (missing {', '.join(sorted(missing))})")
    table = table.apply(lambda column: column.str.strip())
    table.index = table.index + 2
    return table


def _ragged(manifest: Path, line, saw, fields) -> ValueError:
    return ValueError(f"{manifest} line {line}: {saw} cells where the header has {fields} (a cell holding a comma "
                      "needs quotes)")


def _first_ragged_line(manifest: Path) -> tuple[int, int, int]:
    """``(line, cells, header cells)`` of the first row whose cell count differs from the header's."""
    limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            rows = csv.reader(handle)
            fields = len(next(rows))
            return next(((rows.line_num, len(row), fields) for row in rows if row and len(row) != fields),
                        (0, 0, fields))
    finally:
        csv.field_size_limit(limit)


def _resolved(manifest: Path, paths: Iterable[str]) -> list[str]:
    return [str(p if Path(p).is_absolute() else manifest.parent / p) for p in paths]


def manifest_files(manifest: str | Path) -> list[str]:
    """The files a manifest names (relative paths resolved), for checks before any work; ``[]`` when the
    manifest cannot be read (reading it for real then says why)."""
    try:
        table = _manifest_rows(Path(manifest))
    except (OSError, ValueError):
        return []
    return _resolved(Path(manifest), [p for p, label in zip(table["path"], table["label"], strict=True)
                                      if p and not _bad_row(p, label or "-")])


def escape_field(text: str) -> str:
    """``text`` safe for one tab-separated field: backslash, tab, newline, carriage return and other
    control characters written as escapes (``\\t``, ``\\n``, ``\\x1b``), everything else kept."""
    return one_line(text, field=True)


def format_prediction(prediction: FilePrediction) -> str:
    """One tab-separated line per file: path (escaped, :func:`escape_field`), top emotion, and every
    class's probability."""
    probs = " ".join(f"{k}={v:.3f}" for k, v in prediction.probabilities.items())
    return f"{escape_field(prediction.path)}\t{prediction.emotion}\t{probs}"


def format_window(path: str, row: dict, labels: Sequence[str]) -> str:
    """One tab-separated line per scoring window (``predict --windows``): path (escaped), the window's
    ``start-end`` in seconds, its top emotion and every class's probability; a silent window is
    ``silent`` and ``-``. Four fields, where a file's line (:func:`format_prediction`) has three."""
    span = f"{row['start']:.3f}-{row['end']:.3f}"
    if row["silent"]:
        return f"{escape_field(path)}\t{span}\tsilent\t-"
    probs = {label: float(row[label]) for label in labels}
    top = max(probs, key=probs.get)
    return f"{escape_field(path)}\t{span}\t{top}\t" + " ".join(f"{k}={v:.3f}" for k, v in probs.items())


def predictions_table(predictions: Sequence[FilePrediction], labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-window rows plus one ``aggregate`` row per file (column ``row``), for CSV output; ``warning``
    repeats a file's level warning on each of its rows. No predictions: the columns only (``labels``
    names the probability columns then)."""
    labels = list(predictions[0].probabilities) if predictions else list(labels or [])
    frames = []
    for prediction in predictions:
        windows = prediction.windows.assign(file=prediction.path, row="window")
        aggregate = pd.DataFrame([{"file": prediction.path, "row": "aggregate", "start": 0.0,
                                   "end": prediction.duration, "silent": False, **prediction.probabilities}])
        frames += [pd.concat([windows, aggregate], ignore_index=True).assign(warning=prediction.warning)]
    if not frames:
        return pd.DataFrame(columns=[*TABLE_COLUMNS, *labels])
    table = pd.concat(frames, ignore_index=True)
    voiced = ~table["silent"].astype(bool)
    table["emotion"] = ""
    table.loc[voiced, "emotion"] = table.loc[voiced, labels].idxmax(axis=1)
    return table[[*TABLE_COLUMNS, *labels]]


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
