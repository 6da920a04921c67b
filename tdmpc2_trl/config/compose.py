"""Hydra composition of the typed configs, with every mistake turned into one ``ConfigError`` line.

``configs/config.yaml`` (train) and ``configs/eval.yaml`` start from the dataclasses of ``tdmpc2_trl.config.schema``,
registered here in Hydra's ``ConfigStore`` as ``train_schema`` and ``eval_schema``. ``load_config(name, overrides)``
composes like ``@hydra.main`` does and returns the checked dataclass; the recipes call it before anything slow.
Importing this module does not import torch.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from tdmpc2_trl.config.schema import (
    MOVED,
    ConfigError,
    EvalAppConfig,
    OfflineConfig,
    TrainConfig,
    check,
    describe,
    field_names,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SCHEMAS: dict[str, type] = {"config": TrainConfig, "eval": EvalAppConfig, "offline": OfflineConfig}
T = TypeVar("T")

ConfigStore.instance().store(name="train_schema", node=TrainConfig)
ConfigStore.instance().store(name="eval_schema", node=EvalAppConfig)
ConfigStore.instance().store(name="offline_schema", node=OfflineConfig)


def _run_dir_for(resume: str | None, default: str) -> str:
    """``hydra.run.dir``: a resumed run continues in its own directory."""
    if not resume:
        return default
    path = Path(resume)
    return str(path.parent.parent if path.is_file() else path)


OmegaConf.register_new_resolver("run_dir_for", _run_dir_for, replace=True)


def _run_task(task: str, tasks: Any) -> str:
    """The task part of a run directory: the task, or ``multitask-N`` for ``tasks=[...]`` of N tasks."""
    return f"multitask-{len(tasks)}" if tasks else task


OmegaConf.register_new_resolver("run_task", _run_task, replace=True)


def config_dir() -> Path:
    """The repository's ``configs/`` (the package is meant to be installed with ``pip install -e .``)."""
    if not (CONFIG_DIR / "model").is_dir():
        raise ConfigError(f"config directory {CONFIG_DIR} not found; install the project with `pip install -e .`")
    return CONFIG_DIR


def load_config(name: str, overrides: list[str]) -> Any:
    """Compose ``configs/<name>.yaml`` with command-line ``overrides`` and return its checked dataclass
    (``TrainConfig`` for ``config``, ``EvalAppConfig`` for ``eval``); ``ConfigError`` (one line) on any mistake."""
    schema, overrides = SCHEMAS[name], [o for o in overrides if not o.startswith("hydra.")]
    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app whose search path has configs/ (benchmark)
            cfg = compose(name, overrides=overrides)
        else:
            with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
                cfg = compose(name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(explain(err, schema)) from None
    return to_dataclass(cfg, schema)


def command_line_error(name: str, argv: list[str]) -> str | None:
    """What is wrong with a recipe's command line, in one line (``None``: nothing): its config ``name`` composed
    with the ``key=value`` arguments, and (train) whether the run directory's parent can be written. A command
    line with Hydra flags (``--multirun``, ``--cfg job``, ``--help``, …) is left to Hydra."""
    if any(a.startswith("-") for a in argv):
        return None
    try:
        load_config(name, argv)
        if name == "config":
            check_writable(argv)
    except ConfigError as err:
        return str(err)
    return None


def check_writable(argv: list[str]) -> None:
    """Hydra creates the run directory before the app runs and reports a failure as a traceback: probe it first
    (``hydra.run.dir=`` if given, else ``./runs``)."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    target = Path(given[-1] if given else "runs")
    try:
        target.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=target).close()
    except OSError as err:
        raise ConfigError(
            f"cannot write the run directory {target} ({err.strerror or err}); "
            f"choose a writable place with hydra.run.dir=PATH"
        ) from None


def to_dataclass(cfg: DictConfig | dict[str, Any], schema: type[T]) -> T:
    """A composed config (or a checkpoint's plain dict) as the checked dataclass ``schema``."""
    extra = sorted(set(_keys(OmegaConf.to_container(OmegaConf.create(cfg)))) - set(field_names(schema)))
    if extra:
        raise ConfigError(_unknown_key(extra[0], extra[0], schema))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        OmegaConf.resolve(merged)
        out = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(explain(err, schema)) from None
    check(out)
    return out


def _keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of nested ``values`` (``planner.num_samples``, …)."""
    out = []
    for name, value in values.items():
        out += _keys(value, f"{prefix}{name}.") if isinstance(value, dict) else [f"{prefix}{name}"]
    return out


def explain(err: BaseException, schema: type) -> str:
    """One line for a Hydra/OmegaConf composition error: the key, what it was given, the allowed values."""
    if isinstance(err, MissingConfigException):
        return _missing_option(str(err))
    if isinstance(err, OverrideParseException):
        return f"cannot read the command line: {_first_line(err)} (Hydra's syntax: key=value)"
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None) or ""
    override = re.search(r"override (\S+)", str(err))
    given = override.group(1) if override else key
    if isinstance(cause, MissingMandatoryValue):
        return f"{key} is required: {key}=... ({_describe_key(schema, key)})"
    if key in field_names(schema):
        return f"{given}: must be {_describe_key(schema, key)}"
    groups = [name.rsplit(".", 1)[0] for name in field_names(schema) if name.startswith(f"{key}.")]
    if key and groups:
        return f"{given}: {key} is a group of keys; set one of them, e.g. {key}.{_first_key(schema, key)}=..."
    unknown = re.search(r"Key '([^']+)' (?:is )?not in", str(cause)) or re.search(r"override '([^']+)'", str(err))
    if unknown:
        return _unknown_key(unknown.group(1), key, schema)
    return _first_line(err)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _first_key(schema: type, group: str) -> str:
    return next(name for name in field_names(schema) if name.startswith(f"{group}.")).split(".")[-1]


def _describe_key(schema: type, key: str) -> str:
    *groups, name = key.split(".")
    cls = schema
    for group in groups:
        cls = get_type_hints(cls)[group]
    return describe(cls, name)


def _unknown_key(name: str, full_key: str | None, schema: type) -> str:
    """``stepz`` → "unknown key stepz (did you mean steps?)"; an old flat key → where it lives now."""
    key = full_key if full_key and full_key.endswith(name) else name
    key = key.lstrip("+~")
    if key in MOVED:
        return f"unknown key {key}: it is now {MOVED[key]} (e.g. {MOVED[key]}=...)"
    close = difflib.get_close_matches(key, field_names(schema), n=3)
    top = dict.fromkeys(name.split(".")[0] + (".*" if "." in name else "") for name in field_names(schema))
    hint = f" (did you mean {', '.join(close)}?)" if close else f"; keys: {', '.join(top)}"
    return f"unknown key {key}{hint}"


def _missing_option(message: str) -> str:
    """Hydra's "Could not find 'model/huge'" (with its list of options) in one line."""
    found = re.search(r"Could not find '([^'/]+)/([^']+)'", message)
    if not found:
        return message.strip().splitlines()[0]
    group, option = found.groups()
    options = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
    kind = "preset" if group == "preset" else f"{group} preset"
    return f"{group}={option}: unknown {kind}; available: {', '.join(options)}"
