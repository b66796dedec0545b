"""Who drives a run: the owning process recorded in the run store, and whether it still lives.

A process claims a run before it drives it (see `RunStore.claim_run`) so that two processes never
resume the same LangGraph thread at once. The claim names the process by pid, host and the
process's start time: a pid alone can be handed to an unrelated process after the owner dies,
and the start time (from /proc, where there is one) tells the two apart.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PROC = Path("/proc")


@dataclass(frozen=True)
class Owner:
    """A process that may hold a run: pid, host and when the process started."""

    pid: int
    host: str
    started: int | None  # start of the process in clock ticks since boot; None without /proc

    @classmethod
    def current(cls) -> Owner:
        """This process as an owner."""
        return cls.process(os.getpid())

    @classmethod
    def process(cls, pid: int) -> Owner:
        """A process of this host, as a claim would name it."""
        stat = _proc_stat(pid)
        return cls(pid, socket.gethostname(), stat[1] if stat else None)

    @classmethod
    def of(cls, row: dict[str, Any]) -> Owner | None:
        """The owner recorded in a run row, or None when nobody holds the run."""
        if not row.get("pid"):
            return None
        # Rows written before claims had a host were written on this machine's runs.
        host = row.get("host") or socket.gethostname()
        return cls(int(row["pid"]), str(host), row.get("pid_started"))

    def alive(self) -> bool:
        """Whether the owner still runs; an owner on another host is assumed to."""
        if self.host != socket.gethostname():
            return True  # its process table is not ours to look at
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, under another user
        stat = _proc_stat(self.pid)
        if stat is None:
            # Without /proc the signal is all there is; with it, a missing entry means the
            # process ended between the two looks.
            return not _PROC.joinpath("self", "stat").exists()
        state, started = stat
        if state in ("Z", "X"):
            return False  # killed and not yet reaped by its parent
        return self.started is None or started == self.started


def live_owner(row: dict[str, Any]) -> Owner | None:
    """The process that holds this run right now, if one does."""
    owner = Owner.of(row)
    return owner if owner is not None and owner.alive() else None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """The process state letter and start time from /proc/PID/stat, or None."""
    try:
        text = _PROC.joinpath(str(pid), "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[19])
