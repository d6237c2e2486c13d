"""Which files in a folder are audio: the extensions of every format soundfile reads here, and a walk
of folder trees of any depth.

* :data:`AUDIO_EXTENSIONS` - derived from ``soundfile.available_formats()`` (so a newer libsndfile
  adds its formats), with each format's usual spellings (``.aif``/``.aiff``, ``.au``/``.snd``,
  ``.ogg``/``.oga``/``.opus``, NIST's ``.sph``, ...).
* :func:`walk_files` - the files under a folder with given extensions, walked with an explicit queue
  rather than recursion (a tree 1,000 folders deep is fine), following symlinked folders and visiting
  each real folder once (a link back up the tree cannot loop).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import soundfile as sf

#: Usual file extensions of soundfile's format names where ``.<name>`` alone is not it.
_SPELLINGS = {
    "AIFF": (".aif", ".aiff", ".aifc"), "AU": (".au", ".snd"), "IRCAM": (".sf", ".ircam"),
    "MPC2K": (".mpc",), "NIST": (".sph", ".nist"), "OGG": (".ogg", ".oga", ".opus"), "RF64": (".rf64", ".wav"),
    "SVX": (".iff", ".svx", ".8svx"), "WAVEX": (".wav",),
}
#: Formats not looked for in folders: RAW has no header (rate and channels unknown), and ``.mat`` /
#: ``.htk`` files are mostly data or features, not sound: named explicitly they are still tried.
_NOT_SCANNED = ("RAW", "MAT4", "MAT5", "HTK")


def audio_extensions(formats: Iterable[str] | None = None) -> frozenset[str]:
    """Lower-case extensions (with the dot) of ``formats`` (default: ``soundfile.available_formats()``)."""
    formats = sf.available_formats() if formats is None else formats
    return frozenset(ext for name in formats if name not in _NOT_SCANNED
                     for ext in _SPELLINGS.get(name, (f".{name.lower()}",)))


AUDIO_EXTENSIONS = audio_extensions()
#: Lossy formats: where the same clip is also present losslessly, the lossless copy is preferred.
LOSSY_EXTENSIONS = frozenset({".mp3", ".ogg", ".oga", ".opus"})


def walk_files(root: str | Path, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Every file under ``root`` whose extension (any case) is in ``extensions``, nearest folders first.

    Symlinked folders are followed, each real folder listed once; folders that cannot be read are
    left out, as ``os.walk`` does.
    """
    extensions = {e.lower() for e in extensions}
    found, visited, queue = [], set(), deque([Path(root)])
    while queue:  # breadth first: of two routes to one real folder, the shorter names it
        folder = queue.popleft()
        try:
            status = os.stat(folder)
            if (status.st_dev, status.st_ino) in visited:
                continue
            visited.add((status.st_dev, status.st_ino))
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir():  # follows symlinks
                    queue.append(Path(entry.path))
                elif os.path.splitext(entry.name)[1].lower() in extensions and entry.is_file():
                    found.append(Path(entry.path))
            except OSError:  # a link to nowhere, a file removed meanwhile
                continue
    return found


__all__ = ["AUDIO_EXTENSIONS", "LOSSY_EXTENSIONS", "audio_extensions", "walk_files"]
