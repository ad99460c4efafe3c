"""Projected per-step costs of the GPU jobs on a device kind not measured yet (`arelbo plan`).

Until a GPU kind has its measured row in `arelbo/reference/costs.yaml` (from `make gpu-check`), its
row is a *projection*: every GPU job's step is run here on PyTorch's meta device — the real
networks, objectives, optimiser (CUDA's multi-tensor Adam) and batch sizes of the config, and for
the batched jobs the real vmapped K-model step — which dispatches every operator and computes
nothing. Counted there, per step (measured, exact for this code):

- `ops`: operators dispatched, each a piece of host work (Python, dispatcher, autograd);
- `kernels`: of them, those that launch device work (views and allocations excluded);
- `flops`: `torch.utils.flop_counter`'s count (convolutions and matrix products) of one model.

On the device kind a step then costs max(host, device) — an eager GPU step is bound by whichever
side is slower — with host = ops·host_op_s + kernels·launch_s and device = kernels·kernel_floor_s +
K·flops / achieved FLOP/s, K the models stacked in the step. host_op_s, launch_s, kernel_floor_s
and the achieved FLOP/s are the row's stated assumptions, not measurements. Batching K models
(`section3.batched`, `second_stage.batched`) keeps about one step's operators and launches and
multiplies the arithmetic by K: that is what the projection shows of batching.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

META = torch.device("meta")
# Operators that allocate or re-describe memory without launching device work.
_NO_KERNEL = {
    "empty",
    "empty_like",
    "empty_strided",
    "detach",
    "alias",
    "_unsafe_view",
    "lift_fresh",
    "_local_scalar_dense",
    "set_",
    "is_same_size",
    "sym_size",
    "sym_stride",
    "sym_numel",
}


@dataclass(frozen=True)
class StepCount:
    """What one step of a job does, counted on the meta device."""

    ops: int  # operators dispatched (each costs host time)
    kernels: int  # of them, those that launch device work
    flops: float  # multiply-adds × 2 of convolutions and matrix products, of one model
    images: int  # images (or latents) the step processes, per model
    models: int = 1  # K models stacked in the step

    def seconds(self, row: dict, precision: str = "fp32") -> float:
        """Projected seconds of this step on a device kind's projected row (see the module doc)."""
        host = self.ops * row["host_op_s"] + self.kernels * row["launch_s"]
        device = self.kernels * row["kernel_floor_s"] + self.models * self.flops / (
            row["achieved_tflops"][precision] * 1e12
        )
        return max(host, device)


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        name = func.overloadpacket.__name__
        if not func.is_view and name not in _NO_KERNEL:
            self.kernels += 1
        return func(*args, **(kwargs or {}))


def count_step(
    step: Callable[[], None], images: int, *, models: int = 1, flops_step: Callable[[], None] | None = None
) -> StepCount:
    """Count one call of `step` (meta tensors inside) after a warm-up call (optimiser state, lazy
    initialisation). The flops are counted on `flops_step` when given: under vmap the flop counter
    sees the batched (grouped) kernels, whose count is not K times one model's, so a stacked step
    takes its arithmetic from one model's plain step."""
    step()
    counter, flops = _OpCounter(), FlopCounterMode(display=False)
    with counter:
        step()
    with flops:
        (flops_step or step)()
    return StepCount(
        ops=counter.ops, kernels=counter.kernels, flops=float(flops.get_total_flops()), images=images, models=models
    )


def _train_step(net_or_stack, loss_fn, x, optimizer) -> Callable[[], None]:
    """A training step as `arelbo.models.training.run_epoch` takes it: loss and terms kept on the device,
    gradients zeroed, backward of the (summed) loss, Adam step."""

    def step():
        loss, terms = loss_fn(net_or_stack, x)
        kept = [loss.detach().reshape(-1).double()]
        kept += [v.detach().float().reshape(-1) for v in terms.values() if torch.is_tensor(v)]
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()

    return step


def _adam(params, lr: float):
    # CUDA's default Adam is the multi-tensor (foreach) one: count what a GPU run launches
    return torch.optim.Adam(params, lr=lr, foreach=True)


@contextmanager
def _on_meta():
    with torch.device(META):
        yield


def _image_shape(dataset: str) -> tuple[int, int, int]:
    from arelbo.models.nets import ARCHITECTURES

    return ARCHITECTURES[dataset].image_shape


@cache
def train_step(dataset: str, model_id: str, batch_size: int, lr: float, hparams: tuple) -> StepCount:
    """One Table 3 training step of `model_id` on `dataset` (Appendix J net)."""
    from arelbo.models.nets import build_net
    from arelbo.stages.train import model_loss_fn

    with _on_meta():
        net = build_net(model_id, dataset)
        x = torch.rand((batch_size, *_image_shape(dataset)))
    step = _train_step(net, model_loss_fn(model_id, dataset, dict(hparams)), x, _adam(net.parameters(), lr))
    return count_step(step, batch_size)


@cache
def forward_step(dataset: str, model_id: str, batch_size: int, part: str) -> StepCount:
    """One evaluation batch through the encoder (`part="encode"`) or the decoder (`"decode"`)."""
    from arelbo.models.nets import build_net

    with _on_meta():
        net = build_net(model_id, dataset).eval()
        x = torch.rand((batch_size, *_image_shape(dataset)))
        with torch.no_grad():
            mu = net.encode(x)[0]
        z = torch.randn(mu.shape)

    def step():
        with torch.inference_mode():
            net.encode(x) if part == "encode" else net.decode(z)

    return count_step(step, batch_size)


@cache
def section3_step(group: str, k: int, latent_dim: int, batch_size: int, lr: float) -> StepCount:
    """One Section 3 training step of a group's point (k=1, `section3.train_point`) or of k of its
    points stacked into one vectorised step (k>1, `section3.train_points_batched`)."""
    from arelbo.models.training import StackedModels
    from arelbo.stages.section3 import Section3Model, group_loss, loss_fn_for, point_value

    point = _group_point(group)
    with _on_meta():
        x = torch.rand((batch_size, 1, 28, 28))
        single = Section3Model(point, latent_dim)
        plain = _train_step(single, loss_fn_for(point), x, _adam(single.parameters(), lr))
        if k == 1:
            return count_step(plain, batch_size)
        stacked = StackedModels([Section3Model(point, latent_dim) for _ in range(k)])
        values = torch.full((k,), point_value(point))
        loss = group_loss(group)
        step = _train_step(stacked, lambda net, x: net.apply(loss, values, x), x, _adam(stacked.parameters(), lr))
    return count_step(step, batch_size, models=k, flops_step=plain)


def _group_point(group: str):
    """A grid point of `group` (every point of a group has the same network and loss)."""
    from arelbo.core.layout import GridPoint

    if group == "table5":
        return GridPoint(table=5, encoding="stochastic", log10_sigma_z2=0.0)
    table, encoding = group.split("/")
    return GridPoint(table=int(table.removeprefix("table")), encoding=encoding, log10_sigma_x2=0.0)


@cache
def second_stage_step(k: int, d_z: int, hidden: int, depth: int, batch_size: int, lr: float) -> StepCount:
    """One step of k second-stage VAEs stacked (k = 1: one fit), as `estimators.fit_second_stages`
    runs them (it stacks even one fit)."""
    from arelbo.models.estimators import SecondStageVAE, second_stage_loss_given
    from arelbo.models.training import StackedModels

    def stacked_step(k: int):
        with _on_meta():
            stacked = StackedModels([SecondStageVAE(d_z, hidden, depth)] * k)
            u = torch.randn((batch_size, k, d_z))
            unused = torch.zeros(k)

        def loss_fn(net, u):
            eps = torch.randn((u.shape[0], d_z), device=META)
            return net.apply(lambda model, u_k, _: second_stage_loss_given(model, u_k, eps), unused, u, x_dim=1)

        return _train_step(stacked, loss_fn, u, _adam(stacked.parameters(), lr))

    one = stacked_step(1)
    return count_step(stacked_step(k) if k > 1 else one, batch_size, models=k, flops_step=one)


@cache
def inception_step(batch_size: int, dataset: str) -> StepCount:
    """One batch of images through pytorch-fid's InceptionV3 (resized to 299×299), as the FID jobs run
    it. Built on the meta device: the architecture only, its weights are never read."""
    from unittest import mock

    import pytorch_fid.inception as pfi

    with (
        _on_meta(),
        mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None),
    ):
        model = pfi.InceptionV3(output_blocks=(3,), resize_input=True, normalize_input=True).eval()
        x = torch.rand((batch_size, *_image_shape(dataset)))

    def step():
        with torch.inference_mode():
            model(x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x)  # as metrics.fid feeds grey images

    return count_step(step, batch_size)
