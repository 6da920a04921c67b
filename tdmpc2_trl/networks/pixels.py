"""Pixel observations: TD-MPC2's convolutional encoder and the random-shift augmentation of the loss.

Observations are ``FRAME_STACK`` RGB frames of ``PIXEL_SIZE``² stacked on channels, uint8 ``[..., 9, 64, 64]``
(``envs.py`` builds them with TorchRL transforms; the replay buffer keeps them as uint8).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tdmpc2_trl.networks.layers import SimNorm

__all__ = ["FRAME_STACK", "PIXEL_SIZE", "PixelEncoder", "RandomShift", "pixel_obs_shape"]

PIXEL_SIZE = 64  # render size of each frame (TD-MPC2: 64)
FRAME_STACK = 3  # frames stacked on channels (TD-MPC2: 3)


def pixel_obs_shape(size: int = PIXEL_SIZE, frames: int = FRAME_STACK) -> tuple[int, int, int]:
    """``(3·frames, size, size)``: the observation shape of ``obs=rgb``."""
    return (3 * frames, size, size)


class PixelPreprocess(nn.Module):
    """uint8 (or float) pixels in [0, 255] → float in [-0.5, 0.5]: ``x / 255 − 0.5``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div(255.0).sub(0.5)


class PixelEncoder(nn.Module):
    """TD-MPC2's ``layers.conv`` encoder: ``[..., C, H, W]`` pixels → ``[..., latent_dim]`` on the simplex.

    x/255 − 0.5 → Conv(C→c, 7, s2) → ReLU → Conv(c→c, 5, s2) → ReLU → Conv(c→c, 3, s2) → ReLU
    → Conv(c→c, 3, s1) → Flatten → SimNorm. With 64×64 input and c = 32 the flattened map is 32·4·4 = 512
    features, the latent itself (TD-MPC2 uses latent 512 with pixels). For any other latent size a
    ``Linear(512, latent_dim)`` is inserted before SimNorm. Leading dims are flattened into one conv batch and restored.
    """

    def __init__(self, obs_shape: tuple[int, ...], num_channels: int, latent_dim: int, simnorm_dim: int = 8) -> None:
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"PixelEncoder needs a (C, H, W) observation shape, got {tuple(obs_shape)}")
        self.obs_shape = tuple(int(d) for d in obs_shape)
        c = num_channels
        self.convs = nn.Sequential(
            PixelPreprocess(),
            nn.Conv2d(self.obs_shape[0], c, 7, stride=2),
            nn.ReLU(),
            nn.Conv2d(c, c, 5, stride=2),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=1),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = int(self.convs(torch.zeros(1, *self.obs_shape)).shape[-1])
        if flat < 1:
            raise ValueError(f"observation {self.obs_shape} is too small for the conv stack (needs >= 37x37)")
        self.flat_dim = flat
        self.proj = nn.Linear(flat, latent_dim) if flat != latent_dim else nn.Identity()
        self.simnorm = SimNorm(simnorm_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        batch = obs.shape[:-3]
        x = self.convs(obs.reshape(-1, *obs.shape[-3:]))
        return self.simnorm(self.proj(x)).reshape(*batch, -1)


class RandomShift(nn.Module):
    """Random-shift augmentation (DrQ-v2's ``RandomShiftsAug``, TD-MPC2's ``ShiftAug``): pad by ``pad`` pixels
    (edge replicated), then crop the original size back at a random integer offset in [0, 2·pad] per image.

    The crop is TD-MPC2's ``grid_sample`` at exact pixel centres, so it is a pure shift. Works on ``[..., C, H, W]``
    (every leading index gets its own shift) and returns float pixels in the input's range. ``pad = 0`` is the
    identity. TD-MPC2 pads by 3; DrQ-v2 by 4.
    """

    def __init__(self, pad: int = 3) -> None:
        super().__init__()
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.pad = int(pad)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """``shift`` ``[N, 2]`` (x, y offsets in [0, 2·pad], one row per flattened image) replaces the random one."""
        batch, (c, h, w) = x.shape[:-3], x.shape[-3:]
        x = x.reshape(-1, c, h, w).float()
        if self.pad == 0:
            return x.reshape(*batch, c, h, w)
        if h != w:
            raise ValueError(f"RandomShift needs square images, got {h}x{w}")
        n, p = x.shape[0], self.pad
        x = F.pad(x, (p, p, p, p), mode="replicate")
        size = h + 2 * p
        eps = 1.0 / size
        arange = torch.linspace(-1.0 + eps, 1.0 - eps, size, device=x.device, dtype=x.dtype)[:h]
        arange = arange.unsqueeze(0).expand(h, h).unsqueeze(2)
        base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0)  # [1, h, w, (x, y)]
        if shift is None:
            shift = torch.randint(0, 2 * p + 1, (n, 2), device=x.device)
        grid = base_grid + shift.to(x.dtype).view(n, 1, 1, 2) * (2.0 / size)
        out = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
        return out.reshape(*batch, c, h, w)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"
