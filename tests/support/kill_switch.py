"""Run the drpo CLI with a SIGKILL armed at an exact point of its writes (or count those points).

    python tests/support/kill_switch.py SPEC [drpo arguments ...]

SPEC is `KIND:N` — the process SIGKILLs itself at the Nth event of that kind:

- `paid:N`       right after the Nth paid model call is committed (its reply and call record);
- `store-torn:N` inside the Nth run-store write transaction, after its statements, before COMMIT;
- `ckpt-torn:N`  inside the Nth checkpoint-database commit, before it reaches the disk;
- `ckpt:N`       right after the Nth checkpoint-database commit.

`census:FILE` arms nothing and appends one JSON line per event to FILE instead
(`{"kind": ..., "n": ..., "tag": ...}`; `tag` is the last model call's tag, which names the stage),
so a test can pick kill points across both stages from an uninterrupted run.

The kill is a real SIGKILL of the drpo process, delivered by the process to itself so that it
lands between two exact instructions rather than wherever a poller happens to be.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

KINDS = ("paid", "store-torn", "ckpt-torn", "ckpt")


class KillSwitch:
    """Counts write events and kills the process at the armed one (or logs them all)."""

    def __init__(self, spec: str) -> None:
        kind, _, value = spec.partition(":")
        if kind == "census":
            self.kind, self.target, self.census = "", 0, Path(value)
        elif kind in KINDS and value.isdigit():
            self.kind, self.target, self.census = kind, int(value), None
        else:
            raise SystemExit(f"kill_switch: bad SPEC {spec!r} (KIND:N or census:FILE)")
        self.counts = dict.fromkeys(KINDS, 0)
        self.last_tag = ""
        self._lock = threading.Lock()

    def hit(self, kind: str, tag: str | None = None) -> None:
        """Count one event; kill the process if it is the armed one."""
        with self._lock:
            if tag is not None:
                self.last_tag = tag
            self.counts[kind] += 1
            n = self.counts[kind]
            if self.census is not None:
                line = json.dumps({"kind": kind, "n": n, "tag": self.last_tag})
                with self.census.open("a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
                return
            if kind == self.kind and n == self.target:
                os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        """Patch the run store and the checkpoint connection to report their writes."""
        import aiosqlite

        from drpo.backends.llm import CachedReply, CallRecord
        from drpo.checkpoints.store import RunStore

        switch = self
        put_reply = RunStore.put_reply
        write = RunStore._write
        commit = aiosqlite.Connection.commit

        def counted_put_reply(
            store: RunStore,
            key: str,
            reply: CachedReply,
            run_id: str | None = None,
            record: CallRecord | None = None,
        ) -> None:
            put_reply(store, key, reply, run_id, record)
            if record is not None and record.outcome == "ok":
                switch.hit("paid", record.tag)

        @contextmanager
        def counted_write(store: RunStore) -> Iterator[None]:
            manager: AbstractContextManager[None] = write(store)
            with manager:
                yield
                switch.hit("store-torn")

        async def counted_commit(connection: aiosqlite.Connection) -> None:
            switch.hit("ckpt-torn")
            await commit(connection)
            switch.hit("ckpt")

        RunStore.put_reply = counted_put_reply  # type: ignore[method-assign]
        RunStore._write = counted_write  # type: ignore[method-assign,assignment]
        patched: Callable[[aiosqlite.Connection], Awaitable[None]] = counted_commit
        aiosqlite.Connection.commit = patched  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    """Install the switch, then run the drpo CLI with the remaining arguments."""
    if not argv:
        raise SystemExit(__doc__)
    KillSwitch(argv[0]).install()
    from drpo.cli.app import app

    try:
        app(args=argv[1:], prog_name="drpo")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
