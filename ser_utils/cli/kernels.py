"""The notebook kernels a pipeline run starts, and how an interrupted run ends every process they started.

jupyter starts each kernel in a session of its own, so a terminal's Ctrl-C never reaches it, and joblib's
loky workers outlive a killed kernel: :func:`stop_started_processes` ends the kernel, its process group and
their descendants. :func:`recording_kernel_manager` is the kernel manager papermill uses, which records each
kernel it starts and sends the kernel's own output to a log file.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path

#: The kernel managers of the notebook now running (one), for :func:`stop_started_processes`.
KERNELS: list = []


def recording_kernel_manager(log: Path) -> type:
    """jupyter_client's ``AsyncKernelManager`` (papermill's), which also records each kernel it starts and
    sends the kernel's own output (not the notebook's: that is in the executed copy) to ``log``.

    That output is ipykernel's log and whatever the kernel's processes print outside the notebook: it
    reached the terminal as ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.`` (jupyter's
    shutdown interrupts a kernel, in case it is busy, and it was still finishing a failed cell) and, on an
    interrupt, asyncio's "Task was destroyed but it is pending!", around the run's own lines.
    """
    from jupyter_client.manager import AsyncKernelManager

    class RecordedKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            KERNELS.append(self)

        async def start_kernel(self, **kwargs) -> None:
            with open(log, "w") as output:  # the kernel keeps its own copy of the descriptor
                await super().start_kernel(stdout=output, stderr=output, **kwargs)

    return RecordedKernelManager


def stop_started_processes(grace: float = 5.0) -> None:
    """End every process the notebook's run started: the kernel, everything in its process group (jupyter
    starts each kernel in a session of its own, so a terminal's Ctrl-C never reaches it; joblib's loky workers
    and their resource tracker stay in it), and their descendants.

    The kernel gets SIGKILL: it has nothing to save. The rest get SIGTERM, so that joblib's resource tracker
    removes its shared-memory folders, and SIGKILL if still there after ``grace`` seconds.
    """
    import psutil

    kernels = _kernel_pids()
    groups = {pgid for pid in kernels if (pgid := _group_of(pid)) is not None} - {os.getpgrp()}  # never ours
    for pid in kernels:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    found: dict = {}
    for number in (signal.SIGTERM, signal.SIGKILL):
        found.update(_members(groups))
        for process in found.values():
            with suppress(psutil.Error):
                process.send_signal(number)
        found = {p.pid: p for p in _wait_gone(list(found.values()), grace)}
        if not found and not _members(groups):
            break
    for manager in KERNELS:  # the connection file in jupyter's runtime folder
        with suppress(Exception):
            manager.cleanup_connection_file()
    KERNELS.clear()


def _kernel_pids() -> list[int]:
    """The kernels of this run: those its kernel managers started, and any child of this process that leads a
    session of its own, as jupyter starts kernels (a signal that came while a kernel was starting, before its
    manager knew its process id)."""
    import psutil

    kernels = [pid for manager in KERNELS if (pid := getattr(manager.provisioner, "pid", None))]
    with suppress(psutil.Error, OSError):
        kernels += [child.pid for child in psutil.Process().children() if _group_of(child.pid) == child.pid
                    and os.getsid(child.pid) == child.pid]
    return sorted(set(kernels))


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _members(groups: set[int]) -> dict:
    """Every process in ``groups``, and every descendant of one (one that left the group included)."""
    import psutil

    members = {}
    for process in psutil.process_iter():
        with suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) in groups:
                members[process.pid] = process
    for process in list(members.values()):
        with suppress(psutil.Error):
            members.update({p.pid: p for p in process.children(recursive=True)})
    return members


def _wait_gone(processes: list, seconds: float) -> list:
    """The processes still alive after at most ``seconds`` (a zombie counts as gone: its parent, or init,
    reaps it)."""
    import psutil

    def alive(process) -> bool:
        try:
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    deadline = time.monotonic() + seconds
    while (left := [p for p in processes if alive(p)]) and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=0.1)
    return left
