"""SIGINT/SIGTERM for a training run: stop at a safe point, save what is done, exit cleanly.

``install()`` (the recipe's first act, before anything slow is imported) routes both signals to ``_on_signal``.
A signal raises ``Interrupted`` at once, unless a block that must finish is running (``uninterrupted``: an update, a
checkpoint write) or the run has not started yet (``Stop.deferred`` starts at 1; the trainer takes it to 0): then
it acts when that block ends (``stop_if_signalled``). ``phase(name)`` announces where a run is as the audit event
``tdmpc2_trl.phase`` (the fault-injection tests, ``tests/faultshim``, hook it). Standard library only.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Interrupted", "Stop", "install", "phase", "stop_if_signalled", "uninterrupted"]


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop, checkpoint what is done, exit 0. A ``BaseException`` (like ``KeyboardInterrupt``),
    so that no library's ``except Exception`` (e.g. the planner's compile fallback) swallows it."""


class Stop:
    """The first SIGINT/SIGTERM received and how many running blocks must finish before it acts."""

    signum: int = 0
    deferred: int = 1

    @classmethod
    def name(cls) -> str:
        return signal.Signals(cls.signum).name


def _on_signal(signum: int, frame) -> None:
    """Record the signal; raise ``Interrupted`` now unless a block that must finish is running."""
    first = not Stop.signum
    Stop.signum = Stop.signum or signum
    if first and not Stop.deferred:
        raise Interrupted(Stop.name())


def _drop_interrupted(default_hook):
    """An ``Interrupted`` raised while a finaliser or weakref callback ran (e.g. inside torch.compile's caches) is
    dropped by Python with an "Exception ignored" traceback on stderr. Silence only that case: ``Stop.signum``
    still holds the signal, and ``stop_if_signalled`` acts on it at the next check."""

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, Interrupted):
            default_hook(unraisable)

    return hook


def install() -> None:
    """Route SIGINT and SIGTERM to this module (signals received before the run starts wait for it)."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    sys.unraisablehook = _drop_interrupted(sys.unraisablehook)


def stop_if_signalled() -> None:
    """Raise ``Interrupted`` for a signal received earlier (during a deferred block, or swallowed by a library)."""
    if Stop.signum and not Stop.deferred:
        raise Interrupted(Stop.name())


@contextmanager
def uninterrupted() -> Iterator[None]:
    """A block that a signal does not cut in half (one update, a batch's bookkeeping, a checkpoint write): the
    signal acts when the block ends."""
    Stop.deferred += 1
    try:
        yield
    finally:
        Stop.deferred -= 1
    stop_if_signalled()


def phase(name: str) -> None:
    """Announce a phase of the run as the audit event ``tdmpc2_trl.phase`` (the fault-injection tests hook it)."""
    sys.audit("tdmpc2_trl.phase", name)
