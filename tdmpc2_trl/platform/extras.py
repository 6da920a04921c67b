"""Optional features and the pip extra each needs: a missing one is a one-line ``ConfigError`` naming the command.

>>> from tdmpc2_trl.platform.extras import require
>>> require("json", "video", "the standard library")  # present: nothing happens
>>> try:
...     require("no_such_package_here", "video", "eval.save_video=true")
... except Exception as err:
...     print(err)
eval.save_video=true needs the no_such_package_here package: pip install -e ".[video]"
"""

from __future__ import annotations

import importlib.util

from tdmpc2_trl.config.schema import ConfigError

__all__ = ["require"]


def require(module: str, extra: str, feature: str) -> None:
    """Raise ``ConfigError`` (one line) unless ``module`` can be imported; ``extra`` is the project's pip extra
    that installs it, ``feature`` what the user asked for that needs it."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f'{feature} needs the {module} package: pip install -e ".[{extra}]"')
