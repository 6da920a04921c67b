"""Matmul precision: fp32, or bf16 autocast where the hardware runs bf16 matmuls faster than fp32.

Only matmuls (Linear, baddbmm) run in bf16 under ``torch.autocast``; parameters, optimiser state and gradients stay
fp32, and the networks return fp32 outputs (SimNorm and the heads' logits are cast back), so the losses, two-hot
decoding and MPPI statistics are computed in fp32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from tdmpc2_trl.config.schema import PRECISIONS, ConfigError

NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere and later; V100 (7.0) and T4 (7.5) emulate bf16, slower than fp32


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 matmuls beat fp32 on ``device``: a GPU of compute capability 8.0 or more (plain ``cuda``: the
    current one), or a CPU with AMX or AVX512-BF16 instructions.

    Elsewhere bf16 is emulated and slower than fp32: ``torch.cuda.is_bf16_supported()`` counts emulation as
    support (and asks about the current GPU only), and oneDNN emulates it on a CPU without those instructions.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= NATIVE_BF16_CAPABILITY
    if device.type == "cpu":
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, hence the getattr guard
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (``auto`` | ``fp32`` | ``bf16``) on ``device``; ``None`` means fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else None
    return torch.bfloat16 if precision == "bf16" else None


def allow_tf32() -> None:
    """fp32 matmuls on CUDA in TF32 (Ampere and later; ignored by older GPUs): the 10-bit mantissa of a product is
    far below the noise of RL training, and such matmuls run several times faster."""
    matmul = torch.backends.cuda.matmul
    try:
        matmul.fp32_precision = "tf32"  # torch >= 2.9; mixing it with the older flag is an error there
    except AttributeError:
        matmul.allow_tf32 = True


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``'s type; a no-op context when ``dtype`` is None."""
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def precision_name(dtype: torch.dtype | None) -> str:
    return "bf16" if dtype == torch.bfloat16 else "fp32"
