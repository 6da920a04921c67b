"""Test-only fault injection for recipes/train.py, loaded by every Python process that has ``tests/faultshim`` on
``PYTHONPATH`` (and inert unless ``FAULT`` is set). Nothing here is part of the library.

    FAULT=SIGTERM | SIGINT | SIGKILL   the process sends itself this signal ...
    FAULT=ENOSPC:<glob>                ... or, from then on, every write to a file whose path matches <glob> fails
                                       with ENOSPC ("No space left on device")
    FAULT_PHASE=<phase>[#n]            ... when the recipe announces <phase> for the n-th time (audit event
                                       ``tdmpc2_trl.phase``; default n=1). Unset: at start-up (ENOSPC only).
    FAULT_DELAY=<seconds>              ... that many seconds after the phase (a timer thread), e.g. to land inside
                                       the planner's compilation.
    FAULT_TO=<file>                    the signal goes instead to the process whose pid the file holds (a grid
                                       runner, which forwards it to its runs, on either backend), and this process
                                       waits for it to come back (up to 60 s), so that it lands in that phase
                                       whatever the machine's speed.

Disk full: a new file that ``open()`` creates is made a symlink to ``/dev/full`` first, so the program opens it as
usual and its writes fail in the kernel, half way, exactly as on a full disk; an existing file, or one created with
``os.open`` (memory maps), fails when it is opened for writing.
"""

import errno
import fnmatch
import os
import signal
import sys
import threading
import time

_FAULT = os.environ.get("FAULT", "")
_PHASE, _, _NTH = os.environ.get("FAULT_PHASE", "").partition("#")
_DELAY = float(os.environ.get("FAULT_DELAY") or 0)
_seen = {"count": 0, "armed": False}


def _writing(mode, flags) -> bool:
    if isinstance(mode, str):
        return any(ch in mode for ch in "wax+")
    return bool(isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))


def _disk_full(path: str, mode) -> None:
    """Make the coming write to ``path`` fail with ENOSPC (see the module docstring)."""
    if not isinstance(mode, str) or os.path.lexists(path):  # os.open (e.g. memory maps) or an existing file
        if os.path.islink(path) and os.path.realpath(path) == "/dev/full":
            return
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    os.symlink("/dev/full", path)


def _fire() -> None:
    if _FAULT.startswith("ENOSPC:"):
        _seen["armed"] = True
    elif os.environ.get("FAULT_TO"):
        with open(os.environ["FAULT_TO"]) as f:
            os.kill(int(f.read()), getattr(signal, _FAULT))
        interrupts = sys.modules["tdmpc2_trl.run.interrupts"]
        deadline = time.monotonic() + 60
        while not interrupts.Stop.signum and time.monotonic() < deadline:
            time.sleep(0.05)  # the forwarded signal's handler runs here (and raises, outside a deferred block)
    else:
        os.kill(os.getpid(), getattr(signal, _FAULT))


def _hook(event: str, args: tuple) -> None:
    if event == "tdmpc2_trl.phase" and args[0] == _PHASE:
        _seen["count"] += 1
        if _seen["count"] == int(_NTH or 1):
            if _DELAY:
                threading.Timer(_DELAY, _fire).start()
            else:
                _fire()
    elif event == "open" and _seen["armed"] and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if _writing(args[1], args[2]) and fnmatch.fnmatch(path, _FAULT.split(":", 1)[1]):
            _disk_full(path, args[1])


if _FAULT:
    _seen["armed"] = not _PHASE
    sys.addaudithook(_hook)
