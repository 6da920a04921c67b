"""The resume contract: which settings a resumed run may change, and the config it continues with.

A resumed run (``resume=RUN_DIR``) continues with its own resolved configuration (the one in the checkpoint it
resumes, and in ``config.yaml``), except for the keys of ``MAY_CHANGE``, which come from the new command line. A key
outside ``MAY_CHANGE`` that the command line sets to a value other than the run's is refused in one line naming the
key, the run's value and the new one; ``null`` on the command line (the default of every resolved key) takes the
run's value. So ``buffer.size``, ``collector.seed_steps``, ``loss.discount`` and the other resolved values are never
derived again from the new ``steps``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tdmpc2_trl.config.compose import to_dataclass
from tdmpc2_trl.config.schema import OLD_TERMINATION_NAMES, ConfigError, TrainConfig
from tdmpc2_trl.run import resolve

__all__ = ["MAY_CHANGE", "may_change", "resumed_config"]

# A key equal to one of these, or under one ending in ".", may change on resume: they set how long the run goes on,
# how it is watched and where and how fast it runs, not what it learns.
MAY_CHANGE = (
    "steps",
    "eval.",
    "checkpoint_freq",
    "logger.",
    "threads",
    "progress",
    "device",
    "precision",
    "resume",
    "planner.compile",
    "optim.compile",
    "collector.ray_address",
)
SHOWN = 4  # changed keys named in the refusal; more are counted


def may_change(key: str) -> bool:
    """Whether a resumed run may set ``key`` (dotted, e.g. ``eval.freq``) to a new value."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in MAY_CHANGE)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        out.update(flatten(value, f"{prefix}{name}.") if isinstance(value, dict) else {f"{prefix}{name}": value})
    return out


def unflatten(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        *groups, name = key.split(".")
        node = out
        for group in groups:
            node = node.setdefault(group, {})
        node[name] = value
    return out


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_values(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config, flat, as a run of this version would have resolved it: a run written before the
    resolved config was saved gets its buffer capacity from its own ``steps`` (what it was built with)."""
    run = flatten(saved)
    if run.get("buffer.size") is None and run.get("steps") is not None:
        run["buffer.size"] = resolve.buffer_size(None, int(run["steps"]))
    if "model.termination" in run:
        run["model.termination"] = OLD_TERMINATION_NAMES.get(run["model.termination"], run["model.termination"])
    return run


def resumed_config(command: TrainConfig, saved: dict[str, Any], run_dir: str | Path) -> TrainConfig:
    """The config a resumed run continues with: the run's values (``saved``: its checkpoint's config) for every key
    outside ``MAY_CHANGE``, the command line's for the others. ``ConfigError`` naming each changed key."""
    run, new = run_values(saved), flatten(dataclasses.asdict(command))
    changed, merged = [], dict(new)
    for key, value in new.items():
        if may_change(key) or key not in run:  # a key newer than the run keeps the command line's value
            continue
        if value is not None and value != run[key]:
            changed.append(f"{key}={_show(run[key])} (config: {_show(value)})")
        merged[key] = run[key]
    if changed:
        more = f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else ""
        allowed = ", ".join(k + "*" if k.endswith(".") else k for k in MAY_CHANGE if k != "resume")
        raise ConfigError(
            f"cannot resume {run_dir}, whose settings differ from the config: "
            f"{', '.join(changed[:SHOWN])}{more}; "
            f"a resume may change only {allowed} (start a new run for the others)"
        )
    return to_dataclass(unflatten(merged), TrainConfig)
