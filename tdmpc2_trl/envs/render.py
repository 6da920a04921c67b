"""Headless MuJoCo rendering: the OpenGL backend choice and a DMControl env that can render itself.

``configure_gl()`` runs before dm_control is first imported (``envs._import_dmc_suite``): dm_control reads
``MUJOCO_GL`` once, at import. Without a display and without a user choice it picks ``egl`` (GPU or Mesa's
llvmpipe, no X server), or ``osmesa`` (software) where libEGL is missing; with neither library it leaves the
variable alone, state-based training still works and rendering fails with ``rendering_error``'s hint.
"""

from __future__ import annotations

import ctypes.util
import os

import numpy as np
import torch
from torchrl.envs import DMControlEnv

from tdmpc2_trl import _compat
from tdmpc2_trl.config.schema import ConfigError

__all__ = ["DMC_CAMERAS", "RenderableDMControlEnv", "configure_gl", "rendering_error"]

DMC_CAMERAS = {"quadruped": 2}  # TD-MPC2 zooms in on the quadruped (camera 2); every other domain uses camera 0


def configure_gl() -> str | None:
    """Set ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) for headless rendering; returns the backend or ``None``.

    An explicit ``MUJOCO_GL`` is kept; with a ``DISPLAY`` dm_control's own default (GLFW) is kept.
    """
    backend = os.environ.get("MUJOCO_GL")
    if backend is None and not os.environ.get("DISPLAY"):
        if ctypes.util.find_library("EGL"):
            backend = "egl"
        elif ctypes.util.find_library("OSMesa"):
            backend = "osmesa"
        if backend is not None:
            os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def rendering_error(err: Exception) -> ConfigError:
    """A one-line explanation of a failed render (no GL backend, or a backend that cannot start)."""
    return ConfigError(
        f"rendering failed ({type(err).__name__}: {err}); MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}. Headless "
        f"rendering needs EGL (libegl1 + Mesa or a GPU driver) or OSMesa (libosmesa6): install one, or set "
        f"MUJOCO_GL=egl|osmesa"
    )


class RenderableDMControlEnv(DMControlEnv):
    """``DMControlEnv`` with ``render(height, width)``: an RGB frame ``[H, W, 3]`` uint8 of the task's camera.

    TorchRL's ``PixelRenderTransform`` calls it after every (action-repeated) step, and the video recorder calls it
    on the first eval env, so a state-based env renders only when asked.
    """

    def __init__(self, domain: str, task: str, **kwargs) -> None:
        super().__init__(domain, task, **kwargs)
        self.camera_id = DMC_CAMERAS.get(domain, 0)

    def render(self, height: int = 64, width: int = 64) -> torch.Tensor:
        try:
            frame = _compat.wrapped_env(self).physics.render(height=height, width=width, camera_id=self.camera_id)
        except Exception as err:  # dm_control raises RuntimeError / ImportError / GL errors here
            raise rendering_error(err) from err
        return torch.from_numpy(np.ascontiguousarray(frame))
