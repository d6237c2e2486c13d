"""What the command line prints: result lines on stdout that survive a closed pipe, and warnings as one
``warning:`` line each on stderr.

* :func:`say` - a line on stdout. When the reader has gone (``predict ... | head -1``), stdout is
  pointed at ``/dev/null`` and the call returns ``False``: printing stops, the run and its output
  files go on, and Python's own flush at exit finds nothing to complain about (no ``BrokenPipeError``
  traceback).
* :func:`warning_lines` - ``UserWarning``\\ s raised inside the block become ``warning: <message>``
  lines, without the ``file.py:27: UserWarning`` source line Python's default display adds.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_closed = False


def say(text: str) -> bool:
    """Print ``text`` on stdout (flushed); ``False`` once stdout's reader has closed it."""
    if _closed:
        return False
    try:
        print(text, flush=True)
    except BrokenPipeError:
        drop_stdout()
        return False
    return True


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (so a ``BrokenPipeError`` was about stdout)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real file descriptor (captured in tests)
        return False


def drop_stdout() -> None:
    """After a ``BrokenPipeError``: later writes, and the interpreter's flush at exit, go to ``/dev/null``
    instead of failing again."""
    global _closed
    _closed = True
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


_LINE_ESCAPES = {"\n": "\\n", "\r": "\\r"}
_FIELD_ESCAPES = {**_LINE_ESCAPES, "\\": "\\\\", "\t": "\\t"}


def one_line(text: str, *, field: bool = False) -> str:
    """``text`` with its line breaks and other control characters written as escapes (``\\n``, ``\\x1b``),
    so a message naming an odd file name stays one line in a terminal or a log. ``field=True``: also the
    backslash and the tab, so the text is one field of a tab-separated line and can be read back."""
    escapes = _FIELD_ESCAPES if field else _LINE_ESCAPES
    return "".join(escapes.get(c, f"\\x{ord(c):02x}" if (ord(c) < 32 and c != "\t") or ord(c) == 127 else c)
                   for c in text)


def error(text: str) -> None:
    """One ``error:`` line on stderr (line breaks in ``text`` escaped: :func:`one_line`)."""
    print(f"error: {one_line(text)}", file=sys.stderr, flush=True)


def warn(text: str) -> None:
    """A ``warning:`` line on stderr; a warning that lists items puts each on its own indented line, so
    names inside it are escaped where it is made (:func:`one_line`)."""
    print(f"warning: {text}", file=sys.stderr, flush=True)


@contextmanager
def warning_lines() -> Iterator[None]:
    """Show each ``UserWarning`` of the block, as it happens, as one ``warning:`` line (other categories
    as Python would)."""
    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        warnings.simplefilter("always", UserWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, UserWarning):
                warn(str(message))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


__all__ = ["drop_stdout", "error", "one_line", "say", "stdout_reader_gone", "warn", "warning_lines"]
