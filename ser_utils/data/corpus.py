"""RAVDESS corpus: file-name grammar, discovery, validation and download.

A RAVDESS file name has seven two-digit fields, ``MM-VV-EE-II-SS-RR-AA``:
modality (03 = audio-only), vocal channel (01 = speech, 02 = song), emotion (01-08), intensity
(01 normal, 02 strong), statement (01/02), repetition (01/02) and actor (01-24; odd = male).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import soundfile as sf

from ..core.cache import file_digest
from ..core.config import KAGGLE_DATASET
from .scan import AUDIO_EXTENSIONS, LOSSY_EXTENSIONS, walk_files

EMOTIONS: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
)
INTENSITIES = ("normal", "strong")
N_ACTORS = 24
CLIPS_PER_ACTOR = 60
N_CLIPS = N_ACTORS * CLIPS_PER_ACTOR

_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_FIELDS = ("modality", "vocal_channel", "emotion_code", "intensity_code", "statement", "repetition",
           "actor")
_RANGES = {"modality": (1, 3), "vocal_channel": (1, 2), "emotion_code": (1, 8),
           "intensity_code": (1, 2), "statement": (1, 2), "repetition": (1, 2), "actor": (1, N_ACTORS)}


class InvalidFilenameError(ValueError):
    """A file name that does not follow the RAVDESS grammar."""


class CorpusError(RuntimeError):
    """A corpus directory that cannot be used (empty, or not RAVDESS at all)."""


class DownloadError(RuntimeError):
    """RAVDESS could not be downloaded; the message says how to use a local copy."""


def parse_filename(name: str | Path) -> dict:
    """Parse a RAVDESS file name (with or without folder and extension) into its fields.

    Returns a dict with the seven integer codes plus ``emotion`` (name), ``intensity``
    (``"normal"``/``"strong"``), ``gender`` (``"male"`` for odd actors) and ``stem``.

    >>> parse_filename("Actor_01/03-01-05-02-01-01-01.wav")["emotion"]
    'angry'
    """
    stem = Path(name).stem
    match = _NAME.match(stem)
    if match is None:
        raise InvalidFilenameError(
            f"{name!s}: not a RAVDESS file name (expected seven two-digit fields like "
            "03-01-05-02-01-01-12)"
        )
    fields = dict(zip(_FIELDS, map(int, match.groups()), strict=True))
    for key, (low, high) in _RANGES.items():
        if not low <= fields[key] <= high:
            raise InvalidFilenameError(f"{name!s}: {key} = {fields[key]:02d} is outside {low:02d}-{high:02d}")
    if fields["emotion_code"] == 1 and fields["intensity_code"] == 2:
        raise InvalidFilenameError(f"{name!s}: RAVDESS has no strong-intensity neutral clip")
    return {
        "stem": stem,
        **fields,
        "emotion": EMOTIONS[fields["emotion_code"] - 1],
        "intensity": INTENSITIES[fields["intensity_code"] - 1],
        "gender": "male" if fields["actor"] % 2 else "female",
    }


def ravdess_stem(emotion: int, intensity: int, statement: int, repetition: int, actor: int) -> str:
    """The file stem of an audio-only speech clip (the inverse of :func:`parse_filename`)."""
    return f"03-01-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}"


def expected_stems(actors=range(1, N_ACTORS + 1)) -> list[str]:
    """The 60 audio-only speech stems of each actor: neutral has normal intensity only."""
    return [
        ravdess_stem(emotion, intensity, statement, repetition, actor)
        for actor in actors
        for emotion in range(1, 9)
        for intensity in ((1,) if emotion == 1 else (1, 2))
        for statement in (1, 2)
        for repetition in (1, 2)
    ]


def audio_paths(root: str | Path) -> list[Path]:
    """Every audio file under ``root`` (any format soundfile reads, :data:`ser_utils.data.scan.AUDIO_EXTENSIONS`),
    at any depth, following symlinked folders (each real folder is visited once, so a link back up the
    tree cannot loop): nearest to ``root`` first, lossless before lossy formats, then by name."""
    root = Path(root)
    return sorted(walk_files(root, AUDIO_EXTENSIONS),
                  key=lambda p: (len(p.relative_to(root).parts), p.suffix.lower() in LOSSY_EXTENSIONS, str(p)))


def discover(root: str | Path) -> pd.DataFrame:
    """Find every audio-only speech clip under ``root`` (WAV, FLAC or any other format soundfile reads,
    any depth, symlinked folders followed).

    Returns one row per clip, sorted by actor and name, with columns ``path``, ``file``, ``stem``,
    the parsed fields (see :func:`parse_filename`), ``duration`` (s), ``sample_rate`` (Hz) and
    ``channels``. A clip is its stem: the same stem twice (the Kaggle layout holds every actor folder
    twice; or one clip as both ``.wav`` and ``.flac``) is one clip, the copy nearest to ``root`` wins
    (at equal depth lossless before lossy, then by name: ``.flac`` before ``.wav``). ``df.attrs``:

    * ``skipped`` - ``(relative path, reason)`` of files that are not usable (names outside the grammar,
      unreadable audio), also reported in a warning;
    * ``duplicates`` - how many copies were dropped; ``duplicate_files`` lists them as
      ``(relative path, kept copy, how it differs)``: ``"same bytes"``, ``"other format"`` or
      ``"DIFFERENT content"`` (the last also gives a warning: which copy is right is not known);
    * ``video`` and ``song`` - files of the audio-visual modalities and of the song channel, left out
      (``not_speech`` is their sum);
    * ``misplaced`` - ``(relative path, folder actor)`` of clips whose name's actor differs from the
      ``Actor_XX`` folder they are in (kept, as named; also a warning: one of the two is wrong).
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory")
    rows, skipped, duplicates, kept, misplaced = [], [], [], {}, []
    video = song = 0
    for path in audio_paths(root):
        rel = str(path.relative_to(root))
        try:
            fields = parse_filename(path)
        except InvalidFilenameError as err:
            skipped.append((rel, str(err).split(": ", 1)[-1]))
            continue
        if fields["modality"] != 3 or fields["vocal_channel"] != 1:
            video += fields["modality"] != 3
            song += fields["modality"] == 3
            continue
        if fields["stem"] in kept:
            duplicates.append((rel, str(kept[fields["stem"]].relative_to(root)), _compare(kept[fields["stem"]], path)))
            continue
        try:
            with open(path, "rb") as handle:  # a file object: libsndfile refuses paths over 1,024 characters
                info = sf.info(handle)
        except Exception as err:  # soundfile raises several types for broken files
            skipped.append((rel, f"unreadable audio ({err})"))
            continue
        kept[fields["stem"]] = path
        folder_actor = _folder_actor(path.relative_to(root))
        if folder_actor is not None and folder_actor != fields["actor"]:
            misplaced.append((rel, folder_actor))
        rows.append({"path": str(path), "file": path.name, **fields,
                     "duration": info.frames / info.samplerate, "sample_rate": info.samplerate,
                     "channels": info.channels})
    if skipped:
        warnings.warn(f"{root}: skipped {len(skipped)} file(s):\n{_listing(skipped)}", stacklevel=2)
    differing = [(rel, f"differs from {other}") for rel, other, how in duplicates if how == "DIFFERENT content"]
    if differing:
        warnings.warn(f"{root}: {len(differing)} second cop(ies) differ in content from the copy used:\n"
                      f"{_listing(differing)}", stacklevel=2)
    if misplaced:
        warnings.warn(f"{root}: {len(misplaced)} clip(s) named for another actor than their Actor_XX folder:\n"
                      f"{_listing([(rel, f'in the folder of actor {a:02d}') for rel, a in misplaced])}", stacklevel=2)
    columns = ["path", "file", "stem", *_FIELDS, "emotion", "intensity", "gender", "duration",
               "sample_rate", "channels"]
    df = pd.DataFrame(rows, columns=columns).sort_values(["actor", "stem"], ignore_index=True)
    df["emotion"] = pd.Categorical(df["emotion"], categories=EMOTIONS)
    df.attrs.update(root=str(root), skipped=skipped, duplicates=len(duplicates), duplicate_files=duplicates,
                    video=int(video), song=int(song), not_speech=int(video + song), misplaced=misplaced)
    return df


_ACTOR_FOLDER = re.compile(r"actor_?(\d{1,2})", re.IGNORECASE)


def _folder_actor(relative: Path) -> int | None:
    """The actor number of the nearest ``Actor_XX`` folder above a file, if any."""
    for part in reversed(relative.parts[:-1]):
        match = _ACTOR_FOLDER.fullmatch(part)
        if match:
            return int(match.group(1))
    return None


def _compare(kept: Path, copy: Path) -> str:
    """How a second copy of a clip relates to the one kept: same bytes, other format, or different."""
    if kept.suffix.lower() != copy.suffix.lower():
        return "other format"
    if kept.stat().st_size == copy.stat().st_size and file_digest(kept) == file_digest(copy):
        return "same bytes"
    return "DIFFERENT content"


def _listing(items: list[tuple[str, str]], limit: int = 20) -> str:
    listed = "\n".join(f"  {rel}: {why}" for rel, why in items[:limit])
    return listed + (f"\n  ... and {len(items) - limit} more" if len(items) > limit else "")


@dataclass
class CorpusReport:
    """What :func:`validate` found; ``str(report)`` is the human-readable summary."""

    n_clips: int
    n_actors: int
    n_emotions: int
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    skipped: list = field(default_factory=list)
    duplicates: int = 0
    duplicate_files: list = field(default_factory=list)
    video: int = 0
    song: int = 0
    misplaced: list = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.extra and self.n_clips == N_CLIPS

    def __str__(self) -> str:
        lines = [
            f"clips: {self.n_clips} (expected {N_CLIPS})",
            f"actors: {self.n_actors} (expected {N_ACTORS})",
            f"emotions: {self.n_emotions} (expected {len(EMOTIONS)})",
            f"duplicate copies ignored: {self.duplicates}{self._duplicate_kinds()}",
            f"left out (not audio-only speech): {self.video} video-modality, {self.song} song file(s)",
        ]
        if self.missing:
            lines.append(f"missing: {len(self.missing)} clip(s), e.g. {', '.join(self.missing[:5])}")
        if self.extra:
            lines.append(f"unexpected: {len(self.extra)} clip(s), e.g. {', '.join(self.extra[:5])}")
        if self.skipped:
            lines.append(f"skipped files: {len(self.skipped)}")
        if self.misplaced:
            shown = ", ".join(f"{rel} (in the folder of actor {a:02d})" for rel, a in self.misplaced[:3])
            lines.append(f"named for another actor than their Actor_XX folder: {len(self.misplaced)}, e.g. {shown}")
        differing = [f"{rel} ({other})" for rel, other, how in self.duplicate_files if how == "DIFFERENT content"]
        if differing:
            lines.append(f"copies that DIFFER from the one used: {len(differing)}, e.g. {', '.join(differing[:3])}")
        lines.append("status: complete" if self.complete else "status: PARTIAL corpus")
        return "\n".join(lines)

    def _duplicate_kinds(self) -> str:
        kinds = Counter(how for _, _, how in self.duplicate_files)
        return f" ({', '.join(f'{n} {how}' for how, n in sorted(kinds.items()))})" if kinds else ""


def validate(df: pd.DataFrame, *, strict: bool = False) -> CorpusReport:
    """Check a :func:`discover` table against RAVDESS's known shape (1,440 clips, 24 x 60, 8 emotions).

    A partial corpus is usable: it gives a warning that says what is missing, or raises
    :class:`CorpusError` when ``strict``. An empty table always raises.
    """
    if df.empty:
        raise CorpusError(f"{df.attrs.get('root', 'corpus')}: no RAVDESS audio-only speech files found")
    present = set(df["stem"])
    expected = set(expected_stems())
    report = CorpusReport(
        n_clips=len(df), n_actors=df["actor"].nunique(), n_emotions=df["emotion"].nunique(),
        missing=sorted(expected - present), extra=sorted(present - expected),
        skipped=list(df.attrs.get("skipped", [])), duplicates=int(df.attrs.get("duplicates", 0)),
        duplicate_files=list(df.attrs.get("duplicate_files", [])), video=int(df.attrs.get("video", 0)),
        song=int(df.attrs.get("song", 0)), misplaced=list(df.attrs.get("misplaced", [])),
    )
    if not report.complete:
        message = f"RAVDESS corpus is not complete:\n{report}"
        if strict:
            raise CorpusError(message)
        warnings.warn(message, stacklevel=2)
    return report


def download_ravdess() -> Path:
    """Download RAVDESS speech with kagglehub (cached by kagglehub) and return its directory."""
    try:
        import kagglehub

        return Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as err:  # network, credentials, kagglehub errors: all mean "use a local copy"
        raise DownloadError(
            f"could not download RAVDESS ({KAGGLE_DATASET}) with kagglehub: {_download_cause(err)}\n"
            "If you have a local copy, point the study at it with RAVDESS_DIR, e.g.\n"
            "    RAVDESS_DIR=/path/to/ravdess make all\n"
            "(any folder holding the RAVDESS .wav or .flac files, at any depth)."
        ) from err


def _download_cause(err: Exception) -> str:
    """Why kagglehub failed, in a few words. A connection error from requests is 300 characters of connection
    pool internals ("HTTPSConnectionPool(host=...): Max retries exceeded ... Caused by NameResolutionError");
    the last exception of its chain says it ("Name or service not known", "Connection refused")."""
    try:
        from requests.exceptions import ConnectionError as NoConnection
    except ImportError:  # kagglehub without requests: nothing to shorten
        NoConnection = ()
    if isinstance(err, NoConnection):
        last = err
        for _ in range(20):  # a chain may loop back on itself
            nxt = last.__cause__ or last.__context__
            if nxt is None:
                break
            last = nxt
        return f"no connection to Kaggle ({getattr(last, 'strerror', None) or type(last).__name__})"
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def corpus_dir(data_dir: str | Path | None) -> Path:
    """The corpus folder: ``data_dir`` when given (it must exist), else RAVDESS downloaded with kagglehub."""
    if data_dir is None:
        return download_ravdess()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CorpusError(f"RAVDESS_DIR={data_dir} is not a directory")
    return data_dir


#: Clips per actor in :func:`quick_subset` (7 emotions x 2 intensities + neutral at one).
QUICK_CLIPS_PER_ACTOR = 15


def quick_subset(meta: pd.DataFrame) -> pd.DataFrame:
    """Statement 1, repetition 1 of every actor, emotion and intensity (15 of each actor's 60 clips):
    the smoke runs' corpus, a quarter of the work with every actor and class kept."""
    return meta[(meta["statement"] == 1) & (meta["repetition"] == 1)].reset_index(drop=True)


def corpus_digest(root: str | Path) -> str:
    """Digest of the audio files under ``root`` (as :func:`corpus.audio_paths` finds them): relative
    name, size and modification time of each. ``"absent"`` when ``root`` is not a folder."""
    root = Path(root)
    if not root.is_dir():
        return "absent"
    digest = hashlib.blake2b(digest_size=8)
    paths = audio_paths(root)
    for path in paths:
        status = path.stat()
        digest.update(f"{path.relative_to(root)}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return f"{len(paths)} files@{digest.hexdigest()}"
