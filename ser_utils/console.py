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


_LINE_BREAKS = {"\n": "\\n", "\r": "\\r"}


def one_line(text: str) -> str:
    """``text`` with its line breaks and other control characters (tab aside) written as escapes
    (``\\n``, ``\\x1b``), so a message naming an odd file name stays one line in a terminal or a log."""
    return "".join(_LINE_BREAKS.get(c, f"\\x{ord(c):02x}") if (ord(c) < 32 and c != "\t") or ord(c) == 127
                   else c for c in text)


def error(text: str) -> None:
    """One ``error:`` line on stderr."""
    print(f"error: {text}", file=sys.stderr, flush=True)


def warn(text: str) -> None:
    """One ``warning:`` line on stderr."""
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


__all__ = ["drop_stdout", "error", "say", "stdout_reader_gone", "warn", "warning_lines"]
