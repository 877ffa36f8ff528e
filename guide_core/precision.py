"""Mixed precision of one Latent Target Unlearning step: which autocast dtype a setting stands for on a device. The
half-precision part is the frozen super-resolution (where EG3D itself runs fp16, sr_num_fp16_res) plus the loss
networks (LPIPS-VGG, the identity net). The trained tri-plane backbone stays fp32 although EG3D runs its top blocks
in fp16: in bf16 its rounding noise was larger than the global loss between G_u and G_s near the start of a run.
"""
from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# /proc/cpuinfo flags of CPUs whose vector units multiply bf16 natively (x86: AVX512-BF16, AMX; Arm: BF16).
_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this machine's CPU computes bf16 in hardware; without it oneDNN emulates bf16 and is slower than fp32."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() == "arm64" and platform.system() == "Darwin"  # Apple M2 and later
    for line in text.splitlines():
        if line.split(":")[0].strip().lower() in ("flags", "features"):
            return bool(_BF16_CPU_FLAGS & set(line.split(":", 1)[1].split()))
    return False


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` computes bf16 natively (CUDA: compute capability 8.0 and later)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of a precision setting on `device`, or None for plain fp32. "auto" is bf16 where the device
    has
    it natively and fp32 elsewhere; fp16 is a CUDA format (CPU convolutions in fp16 are slower than in fp32).
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device, not {device.type}; use bf16 or fp32 there")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def mixed_precision(dtype: torch.dtype | None, device_type: str) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device_type`; a no-op context for None, so fp32 code paths stay exactly as they were."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)
