"""Test-session settings (one torch thread) and the fixtures several test files share.

The tests use tiny networks, where a second thread gains nothing; on a shared machine a two-thread op waits for a
descheduled thread on every call (measured: 50x slower), so one thread keeps the suite fast and steady.
"""

import importlib.util
import signal
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def load_recipe():
    """``load_recipe("eval")``: the module of ``recipes/eval.py`` (recipes are scripts, not an importable package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def restore_signal_handlers():
    """For a test that installs the recipes' SIGINT/SIGTERM handlers: pytest's handlers (and hook) back afterwards."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    sys.unraisablehook = hook
