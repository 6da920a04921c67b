"""``torch.compile`` with an eager fallback: a missing compiler or an unsupported op costs speed, never the run."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["EagerOnFailure", "compile_or_eager", "compiling_deferred", "inductor_options", "on_compile"]

_notices: list[Callable[[str], None]] = []
_dones: list[Callable[[str], None]] = []
_deferred: list[bool] = []  # non-empty inside ``compiling_deferred()``


def on_compile(notice: Callable[[str], None] | None, done: Callable[[str], None] | None = None) -> None:
    """Call ``notice(what)`` (e.g. print "compiling the planner…") before each new graph compiles and ``done(what)``
    after its first call returned; ``None``: stop."""
    _notices[:] = [notice] if notice is not None else []
    _dones[:] = [done] if notice is not None and done is not None else []


@contextlib.contextmanager
def compiling_deferred() -> Iterator[None]:
    """Inside: a graph not compiled yet runs eagerly instead (and compiles at its first call outside).

    A TorchRL collector calls its policy once while it is built, to learn its output keys; without this that call
    would compile the planner (minutes on a CPU) before the random seed steps, which need no planner."""
    _deferred.append(True)
    try:
        yield
    finally:
        _deferred.pop()


def _shapes(args: tuple[Any, ...]) -> tuple:
    """The graph key: tensor shapes, and other arguments (flags such as the planner's explore) by value."""
    return tuple(a.shape if isinstance(a, torch.Tensor) else a for a in args)


_RUNTIME_ERRORS = tuple(
    t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch, "AcceleratorError", None)) if t is not None
)


def _runtime_failure(err: BaseException | None) -> bool:
    """Whether ``err`` or an error it wraps is an out-of-memory or device error: the run's, not the compiler's."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, _RUNTIME_ERRORS):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


class EagerOnFailure:
    """Calls ``compiled``; if it fails to compile, warns once (naming ``what``) and calls ``eager`` from then on.

    Only the first call for each set of input shapes (each new graph) is guarded; later errors propagate as usual.
    Not a compile failure, and raised as it is: an out-of-memory or device error (also wrapped by the compiler),
    which eager would only meet again, and any error that the eager call raises too (a mistake in the inputs).
    """

    def __init__(self, compiled: Callable, eager: Callable, what: str, hint: str = "") -> None:
        self.compiled, self.eager, self.what, self.hint, self.seen_shapes = compiled, eager, what, hint, set()

    def __call__(self, *args):
        key = _shapes(args)
        if key in self.seen_shapes:
            return self.compiled(*args)
        if _deferred:
            return self.eager(*args)
        compiles = self.compiled is not self.eager
        for notice in _notices if compiles else ():
            notice(self.what)
        failure = None
        try:
            out = self.compiled(*args)
        except Exception as err:  # dynamo/inductor wrap failures in several types (BackendCompilerFailed, ...)
            if _runtime_failure(err):
                raise
            failure = err
        if failure is not None:
            out = self.eager(*args)  # outside the except block: an error here is the call's own, reported as such
            first_line = (str(failure).splitlines() or [""])[0]
            warnings.warn(
                f"torch.compile of {self.what} failed ({type(failure).__name__}: {first_line}); "
                f"running it eagerly{f' ({self.hint})' if self.hint else ''}",
                RuntimeWarning,
                stacklevel=2,
            )
            self.compiled = self.eager
        self.seen_shapes.add(key)
        for done in _dones if compiles else ():
            done(self.what)
        return out


def inductor_options(device: torch.device | str) -> dict[str, Any] | None:
    """Inductor's options for graphs that run on ``device``: on a CPU, the C++ wrapper.

    With the default Python wrapper inductor builds every fused kernel as a C++ file of its own, and each costs about
    a second before its code is compiled at all (loading the ~150 MB precompiled ATen header, linking): two thirds of
    the compile of a graph of small kernels such as the planner's. The C++ wrapper builds a graph and its kernels as
    one file, and its calls skip the Python wrapper (docs/performance.md, "Compiling"). GPUs keep the default."""
    return {"cpp_wrapper": True} if torch.device(device).type == "cpu" else None


def compile_or_eager(
    fn: Callable, what: str, hint: str = "", device: torch.device | str | None = None
) -> EagerOnFailure:
    """``torch.compile(fn)`` (static shapes: one graph per input shape) that falls back to ``fn`` if it fails;
    ``device``: where the graph runs, for ``inductor_options``."""
    options = None if device is None else inductor_options(device)
    return EagerOnFailure(torch.compile(fn, dynamic=False, options=options), fn, what, hint)
