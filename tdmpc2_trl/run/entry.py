"""The command-line shape every training recipe shares: signals first, the config checked in one line, then the
Hydra app; and errors of a run turned into one line and exit code 2. Imports only the standard library at first."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from tdmpc2_trl.platform.process import tune_process
from tdmpc2_trl.run import interrupts

__all__ = ["exit_code", "recipe_main"]


def recipe_main(config_name: str, app: str, argv: list[str]) -> int:
    """Check ``configs/<config_name>.yaml`` composed with ``argv`` (a mistake: one line on stderr, exit 2, before
    anything slow), then run ``app`` (``"module:function"``, called with the Hydra config and the run directory, its
    return value the exit code) as a Hydra app. SIGINT/SIGTERM stop the run cleanly from the first line on."""
    interrupts.install()  # before the slow imports
    tune_process()  # the OpenMP wait only takes effect before torch loads
    from tdmpc2_trl.config.compose import command_line_error, config_dir  # Hydra, not yet torch

    if error := command_line_error(config_name, argv):
        print(f"error: {error}", file=sys.stderr)
        return 2
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base=None)
    def hydra_app(cfg) -> None:
        module, function = app.split(":")
        run = getattr(importlib.import_module(module), function)  # torch, TorchRL
        sys.exit(run(cfg, HydraConfig.get().runtime.output_dir))

    hydra_app()
    return 0


def exit_code(run: Callable[[], None]) -> int:
    """``run()`` for a command line: 0 when it returns (done, or stopped by a signal); 2 after a one-line error on
    stderr for a configuration mistake found while building or an OS error (a full disk: the file's name)."""
    from tdmpc2_trl.config.schema import ConfigError
    from tdmpc2_trl.platform.checkpoint import os_error_line

    try:
        run()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(os_error_line(err), file=sys.stderr)
        return 2
    return 0
