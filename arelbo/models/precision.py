"""The evidence for the precision policy (arelbo.core.precision): the operand rounding of a TF32
convolution reproduced on the CPU, and a comparison of an objective's loss and gradient with IEEE
FP32's.

`simulated_tf32` rounds each convolution's inputs, weights and incoming gradients to TF32 and
accumulates the products in FP32, as cuDNN's TF32 kernels do on tensor cores; `gradient_agreement`
compares an objective under it (or under the real CUDA switches) with FP32, on the same weights and
images. tests/test_nets.py holds every model's registry entry to it; benchmarks/tf32_precision.py
measures it, on a GPU with the real switches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from arelbo.core.precision import arithmetic

TF32_MANTISSA_BITS = 10


def tf32_round(x: Tensor) -> Tensor:
    """`x` (float32) rounded to TF32: 10 mantissa bits, to nearest with ties away from zero (the
    PTX `cvt.rna.tf32.f32` conversion tensor cores' inputs go through), still stored as float32."""
    if x.dtype != torch.float32:
        raise TypeError(f"tf32_round takes float32, not {x.dtype}")
    drop = 23 - TF32_MANTISSA_BITS
    bits = x.contiguous().view(torch.int32)
    # adding half an ulp of TF32 to the magnitude bits carries into the exponent where it must
    rounded = (bits + (1 << (drop - 1))) & ~((1 << drop) - 1)
    finite = torch.isfinite(x)
    return torch.where(finite, rounded.view(torch.float32), x)


class _RoundGradient(torch.autograd.Function):
    """Identity forward; rounds the incoming gradient to TF32 (the convolution's backward operands)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return tf32_round(grad.float()).to(grad.dtype)


class _RoundValue(torch.autograd.Function):
    """Rounds to TF32 forward; passes the gradient through (the rounding's derivative is taken as 1)."""

    @staticmethod
    def forward(ctx, x):
        return tf32_round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _tf32_convolution(convolution: Callable) -> Callable:
    def simulated(input, weight, bias=None, *args, **kwargs):
        if input.dtype != torch.float32:  # a bf16 trunk under autocast: not a TF32 convolution
            return convolution(input, weight, bias, *args, **kwargs)
        out = _RoundGradient.apply(
            convolution(_RoundValue.apply(input), _RoundValue.apply(weight), None, *args, **kwargs)
        )
        # the bias is added, and its gradient summed, in FP32 (not a tensor-core product)
        return out if bias is None else out + bias.view(1, -1, *([1] * (out.ndim - 2)))

    return simulated


@contextlib.contextmanager
def simulated_tf32() -> Iterator[None]:
    """Inside, every float32 2-D convolution and transposed convolution computes as cuDNN's TF32
    kernels do: forward on TF32-rounded inputs and weights; backward, the input's gradient from
    TF32-rounded incoming gradients and weights, the weight's from TF32-rounded inputs and incoming
    gradients; every product accumulated in FP32. The bias and everything else stay FP32, as on CUDA
    with `tf32` (matrix products are not touched). Patches torch.nn.functional for the duration:
    not thread-safe, for measurements and tests."""
    saved = F.conv2d, F.conv_transpose2d
    F.conv2d, F.conv_transpose2d = (_tf32_convolution(f) for f in saved)
    try:
        yield
    finally:
        F.conv2d, F.conv_transpose2d = saved


class Agreement(NamedTuple):
    """How one objective's loss and gradient at a precision compare with IEEE FP32's."""

    loss_fp32: float
    loss: float
    gradient_cosine: float

    @property
    def loss_relative(self) -> float:
        return abs(self.loss - self.loss_fp32) / max(abs(self.loss_fp32), 1e-30)


def gradient_agreement(
    loss_fn: Callable[[], Tensor], parameters: list[Tensor], context: Callable[[], contextlib.AbstractContextManager]
) -> Agreement:
    """Loss and gradient of `loss_fn()` in IEEE FP32 and inside `context()`, same weights and data.
    `loss_fn` reseeds whatever it draws, so both evaluations see the same noise."""

    def evaluate(ctx) -> tuple[float, Tensor]:
        for p in parameters:
            p.grad = None
        with ctx:
            loss = loss_fn()
            loss.backward()
        grad = torch.cat([p.grad.flatten() for p in parameters if p.grad is not None])
        return float(loss.detach()), grad

    loss32, grad32 = evaluate(arithmetic("fp32"))
    loss, grad = evaluate(context())
    for p in parameters:
        p.grad = None
    cosine = float(F.cosine_similarity(grad.double(), grad32.double(), dim=0))
    return Agreement(loss32, loss, cosine)
