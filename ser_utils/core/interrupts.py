"""Ctrl-C and SIGTERM stop a run cleanly between files, and are never mistaken for a bad file.

Inside :func:`deferred`, SIGINT and SIGTERM are only recorded; :func:`check`, called between files
(and between clips of a feature batch), raises :class:`Interrupted` once one arrived. A second signal
raises at once, for a file that takes long. At the end of the block a signal that no check saw
raises too, so none is lost.

Why not the usual ``KeyboardInterrupt``: openSMILE (the ``egemaps`` features) calls back into Python
through ctypes while it extracts (``opensmile.core.lib.OpenSMILE.external_sink_set_callback_ex``), and
ctypes prints and drops any exception raised in a callback ("Exception ignored on calling ctypes
callback function"). A Ctrl-C landing there vanished: the run went on to exit 0, or the clip came back
as NaN features and was reported as a bad file. The extractor therefore runs openSMILE inside
:func:`deferred` and calls :func:`check` right after it.

Inside :func:`raising` (the pipeline: its work is done by kernel processes, it has no file of its own to
finish), SIGINT and SIGTERM raise :class:`Interrupted` at once - SIGTERM too, which by default ends Python
without a word and without the clean-up (the kernel and its workers outlived the run).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; ``exit_status`` is the shell's convention, 128 + the signal number
    (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_status = 128 + signum


def _record(signum, frame) -> None:
    _received.append(signum)
    if len(_received) > 1:  # asked twice: do not wait for the end of the file
        raise Interrupted(_received[0])


@contextmanager
def deferred() -> Iterator[None]:
    """Record SIGINT / SIGTERM instead of acting on them; see the module docstring.

    Nested blocks share the outer block's record. Outside the main thread (where Python cannot set
    signal handlers) the block does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is _record:
        yield
        return
    # Cleared before the handlers are set, never after: a signal that arrived while they were being
    # set (Python runs a handler later, whichever is set by then) would otherwise be wiped, and the run
    # would go on to exit 0.
    _received.clear()
    previous = {s: signal.signal(s, _record) for s in SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        pending = list(_received)
        _received.clear()
    if pending:
        raise Interrupted(pending[0])


def _raise(signum, frame) -> None:
    for number in SIGNALS:  # from now on: the clean-up on the way out is not cut short by a second Ctrl-C
        signal.signal(number, signal.SIG_IGN)
    # The libraries' own words while the run unwinds are not the reader's: a signal landing inside one of
    # nbclient's coroutines lets it shut the kernel down on the way out, and it logged "Kernel died while
    # waiting for execute reply." before the run's one line.
    logging.disable(logging.CRITICAL)
    raise Interrupted(signum)


@contextmanager
def raising() -> Iterator[None]:
    """The first SIGINT or SIGTERM inside the block raises :class:`Interrupted` at once; later ones are
    ignored, and logging is off, until the block ends (see the module docstring). Outside the main thread
    (where Python cannot set signal handlers) the block does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    logged = logging.root.manager.disable
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        logging.disable(logged)


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived inside :func:`deferred`; else nothing."""
    if _received:
        raise Interrupted(_received[0])


__all__ = ["SIGNALS", "Interrupted", "check", "deferred", "raising"]
