"""The arithmetic each training and job runs in (docs/design.md, "Precision policy").

Three precisions, from the strictest:

- ``fp32``: IEEE single precision everywhere. On CUDA both TF32 switches are off
  (``torch.backends.cudnn.allow_tf32`` and ``torch.backends.cuda.matmul.allow_tf32``).
- ``tf32``: FP32 tensors, but cuDNN's convolutions round their operands to TF32 (a 10-bit mantissa,
  2⁻¹¹ relative) on Ampere and newer tensor cores and accumulate in FP32 — PyTorch's own default on
  CUDA; matrix products stay IEEE FP32. Several times faster than ``fp32`` for the CelebA nets.
- ``bf16``: the Appendix J trunks under bfloat16 autocast (nets.VAE.trunk_dtype); the heads, the final
  layer, the variance parameters and every loss in IEEE FP32.

The config's ``train.<dataset>.precision`` is the fastest a training may use; each model trains at the
fastest its registry entry tolerates (``bf16_safe``, ``tf32_safe``), no faster. TF32 exists only on
CUDA: on the CPU ``tf32`` is ``fp32``, and so it is under ``cuda_deterministic: true``.

Torch-free at import (the planner and the config read it); torch is imported where a switch is set.
The evidence for each model's tolerance is arelbo.models.precision's TF32 simulation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

PRECISIONS = ("fp32", "tf32", "bf16")  # from the strictest; train.<dataset>.precision's choices
# The precision of everything that is not a Table 3/4 training: Section 3 trainings, second stages,
# encoding, sampling, MSE and Inception features (generated and reference alike). Cheap next to the
# trainings, and the metrics are compared with FP32 references.
EVALUATION_PRECISION = "fp32"


def training_precision(
    requested: str, *, bf16_safe: bool, tf32_safe: bool, device_type: str, deterministic: bool
) -> str:
    """The precision a training runs at: the fastest of `requested` and below that the model
    tolerates, and that the device offers (TF32: CUDA without `cuda_deterministic`)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested == "bf16" and bf16_safe:
        return "bf16"
    tf32_available = device_type == "cuda" and not deterministic
    if requested in ("bf16", "tf32") and tf32_safe and tf32_available:
        return "tf32"
    return "fp32"


def tf32_flags(precision: str) -> dict[str, bool]:
    """The CUDA switches a precision sets: TF32 convolutions only for `tf32`; matmuls never."""
    return {"cudnn.allow_tf32": precision == "tf32", "cuda.matmul.allow_tf32": False}


def current_tf32_flags() -> dict[str, bool]:
    import torch

    return {
        "cudnn.allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "cuda.matmul.allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
    }


def set_arithmetic(precision: str) -> None:
    """Set the TF32 switches `precision` asks for, for the rest of the process: what every job does
    at its start with EVALUATION_PRECISION (a training then sets its own, inside `arithmetic`).
    Through the legacy `allow_tf32` attributes only: torch ≥ 2.9 refuses to read one API's flags
    after the other API has set them."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    wanted = tf32_flags(precision)
    torch.backends.cudnn.allow_tf32 = wanted["cudnn.allow_tf32"]
    torch.backends.cuda.matmul.allow_tf32 = wanted["cuda.matmul.allow_tf32"]


def current_precision(device_type: str) -> str:
    """The FP32 arithmetic the switches give on a device now: `tf32` where cuDNN may use TF32 (CUDA),
    else `fp32` (the CPU has no TF32). Recorded with every metric (runtime.device_info)."""
    import torch

    return "tf32" if device_type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"


@contextlib.contextmanager
def arithmetic(precision: str) -> Iterator[None]:
    """Set the TF32 switches `precision` asks for and restore the previous ones afterwards. They are
    process-wide flags, set whatever the device (harmless on the CPU, where the tests read them)."""
    before = current_tf32_flags()
    set_arithmetic(precision)
    try:
        yield
    finally:
        import torch

        torch.backends.cudnn.allow_tf32 = before["cudnn.allow_tf32"]
        torch.backends.cuda.matmul.allow_tf32 = before["cuda.matmul.allow_tf32"]
