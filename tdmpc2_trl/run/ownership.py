"""One owner per run directory: a training run holds ``<run dir>/.owner`` for its whole life.

Two layers. An ``fcntl.flock`` on the file, which the kernel drops with the process (``kill -9`` included), so a
crashed run never blocks its own resume. And, for storage shared between machines where a lock taken on one host may
not be seen on another, a JSON record in the file (host, PID, since, heartbeat) that the owner refreshes every
``HEARTBEAT_S`` seconds: a record of another host whose heartbeat is younger than ``STALE_AFTER_S`` keeps the
directory taken even when the flock was granted; an older one is taken over, with one line saying so. A record of
this host under a granted flock is always stale (its process is gone: the kernel released its lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tdmpc2_trl.config.schema import ConfigError

__all__ = ["HEARTBEAT_S", "OWNER_FILE", "STALE_AFTER_S", "RunOwnership", "describe_owner", "owner_of"]

OWNER_FILE = ".owner"
HEARTBEAT_S = 30.0  # how often the owner refreshes its record
STALE_AFTER_S = 600.0  # a record of another host silent this long is taken over (20 missed heartbeats)


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _read_record(path: Path) -> dict[str, Any] | None:
    """The owner record, ``None`` when the file is missing or empty (released); an unreadable record (a write
    cut short) counts as written at the file's modification time by an unknown holder."""
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except OSError:
        return None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
        if isinstance(record, dict) and {"host", "pid", "since", "heartbeat"} <= set(record):
            return record
    except ValueError:
        pass
    return {"host": "?", "pid": "?", "since": mtime, "heartbeat": mtime}


def describe_owner(record: dict[str, Any], now: float | None = None) -> str:
    """ "PID 123 on host h since 2026-01-01 10:00:00 UTC (heartbeat 4 s ago)"."""
    age = (now if now is not None else _now()) - float(record["heartbeat"])
    return (
        f"PID {record['pid']} on host {record['host']} since {_iso(float(record['since']))} (heartbeat {age:.0f} s ago)"
    )


def _is_live(record: dict[str, Any] | None, now: float, stale_after: float) -> bool:
    """A record left by another host (a granted flock says nothing there) whose heartbeat is recent."""
    return (
        record is not None and record["host"] != socket.gethostname() and now - float(record["heartbeat"]) < stale_after
    )


def owner_of(run_dir: str | Path, stale_after: float = STALE_AFTER_S) -> dict[str, Any] | None:
    """The record of the process that owns ``run_dir`` now, ``None`` if nobody does (the grid's check)."""
    path = Path(run_dir) / OWNER_FILE
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held here: the record names the holder (or, mid-write, an unknown one)
            return _read_record(path) or {"host": "?", "pid": "?", "since": _now(), "heartbeat": _now()}
        record = _read_record(path)
        return record if _is_live(record, _now(), stale_after) else None
    finally:
        os.close(fd)


class RunOwnership:
    """The lock on a run directory, held from ``acquire`` to ``release`` (a context manager)."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after: float = STALE_AFTER_S,
        say: Callable[[str], None] = print,
    ) -> None:
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / OWNER_FILE
        self.heartbeat_s, self.stale_after, self.say = heartbeat_s, stale_after, say
        self.fd: int | None = None
        self.record: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the directory, or raise ``ConfigError`` naming its holder (the recipe's one line, exit 2)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._refuse(_read_record(self.path))
        now, record = _now(), _read_record(self.path)
        if _is_live(record, now, self.stale_after):
            os.close(fd)
            self._refuse(record)
        if record is not None and record["host"] != socket.gethostname():
            self.say(
                f"taking over {self.run_dir} from {describe_owner(record, now)}: no heartbeat for over "
                f"{self.stale_after:.0f} s"
            )
        self.fd = fd
        self.record = {"host": socket.gethostname(), "pid": os.getpid(), "since": now, "heartbeat": now}
        self._write()
        self._thread = threading.Thread(target=self._beat, name="run-owner-heartbeat", daemon=True)
        self._thread.start()

    def _refuse(self, record: dict[str, Any] | None) -> None:
        holder = describe_owner(record) if record else "another process"
        raise ConfigError(
            f"{self.run_dir} is in use by {holder}; one process at a time may train in a run "
            f"directory (stop it first, or wait for it to finish)"
        )

    def _write(self) -> None:
        """The record, rewritten in place (the flock is on this file, so it is not replaced by a rename); written
        before the file is cut to its length, so that a reader never finds it empty (free) while it is owned."""
        data = json.dumps(self.record).encode()
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.record["heartbeat"] = _now()
            with suppress(OSError):  # a full disk must not kill the run; the record just ages
                self._write()

    def release(self) -> None:
        """Stop the heartbeat, empty the record and drop the lock (the file stays: removing a locked file races)."""
        if self.fd is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing the descriptor drops the flock
        self.fd = None

    def __enter__(self) -> RunOwnership:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
