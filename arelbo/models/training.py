"""The optimisation loop every training shares — Table 3 models, Section 3 grid points and
second-stage VAEs: shuffled minibatches from in-memory tensors, one pass of a loss over them (with
a bounded number of host syncs), a clear stop on a non-finite loss, and K same-architecture models
trained as one vectorised module (torch.func). What a *job* adds around it — checkpoints, resume,
validation-based selection, logs — lives in `arelbo.stages.train`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from arelbo.core.errors import ArelboError


class TrainingDiverged(ArelboError, RuntimeError):
    """A non-finite loss: the message names the model, the epoch and the step."""


@dataclass
class Batches:
    """Shuffled minibatches drawn by index from one in-memory tensor (no Dataset/DataLoader).
    uint8 images become floats in [0, 1] per batch; float tensors (e.g. latents) pass through."""

    images: torch.Tensor  # uint8 N×C×H×W images or float N×D rows, already on the training device
    batch_size: int
    # uint8 images become (pixel + u)/256, u ~ U[0, 1) drawn per batch from the pass's generator (the
    # global RNG when the pass has none: validation, which seeds it) instead of pixel/255: the open
    # choice `choices.data` (arelbo.core.open_choices)
    dequantize: bool = False

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def epoch(self, generator: torch.Generator | None, first_step: int = 0):
        """The pass's batches in the generator's order, from batch `first_step` on (a resumed pass
        draws the whole order, and the skipped batches' noise, then skips the batches it already
        trained on)."""
        n = len(self.images)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        order = order.to(self.images.device)
        to_float = self.images.dtype == torch.uint8
        dequantize = self.dequantize and to_float
        for step, start in enumerate(range(0, n, self.batch_size)):
            index = order[start : start + self.batch_size]
            if dequantize:
                noise = torch.rand((len(index), *self.images.shape[1:]), generator=generator)
            if step < first_step:
                continue
            batch = self.images[index]
            if dequantize:
                yield batch.float().add_(noise.to(batch.device)).div_(256.0)
            else:
                yield batch.float().div_(255.0) if to_float else batch


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class EpochStopped(Exception):
    """`run_epoch` was asked to stop between two training steps. `state` (plain tensors and ints) is
    what `run_epoch(resume=state)` needs to finish the pass as if it had not stopped: the steps done
    and their per-step losses and terms."""

    def __init__(self, state: dict):
        super().__init__(f"stopped after step {state['steps']} of the pass")
        self.state = state


# How many steps may pass between two host-side checks of the losses: one .item() sync per check
# instead of one per step (a sync stalls the launch queue of a small GPU net). A run that
# diverges stops at most this many steps late; no model file is written either way.
FINITE_CHECK_EVERY = 200


def _raise_if_diverged(
    losses: torch.Tensor,
    terms: dict[str, torch.Tensor],
    steps: int,
    *,
    where: str,
    epoch: int,
    training: bool,
    names: list[str] | None = None,
) -> None:
    """One host sync: raise TrainingDiverged naming the first non-finite step among the first `steps`
    (and, for K stacked models, the first of them whose loss is not finite there)."""
    finite = torch.isfinite(losses[:steps])
    if bool(finite.all()):
        return
    bad = (~finite).reshape(steps, -1)
    step = int(bad.any(1).nonzero()[0, 0])
    k = int(bad[step].nonzero()[0, 0])
    pick = (lambda v: v[step]) if names is None else (lambda v: v[step, k])
    shown = ", ".join(f"{name}={float(pick(v)):.4g}" for name, v in terms.items())
    who = where if names is None or len(names) == 1 else f"{where}, model {names[k]}"
    raise TrainingDiverged(
        f"{who}: non-finite loss ({float(pick(losses)):.4g}) at epoch {epoch}, "
        f"{'training' if training else 'validation'} step {step} ({shown}). "
        "Lower the learning rate or check the data; no model file was written."
    )


def run_epoch(
    net,
    batches: Batches,
    loss_fn: Callable,
    *,
    optimizer=None,
    generator=None,
    where: str = "",
    epoch: int = 0,
    progress: bool = False,
    names: list[str] | None = None,
    stop: Callable[[], bool] | None = None,
    resume: dict | None = None,
    lr_at_step: Callable[[int], float] | None = None,
) -> dict[str, float]:
    """One pass; returns the batch-averaged loss and terms. Trains when an optimizer is given.

    A training pass raises EpochStopped after the first step at which `stop()` is true (never after
    its last step: the pass is then complete); `resume`, an EpochStopped's state, continues that pass
    at the next step with the losses of the steps already done, so that the result equals an
    uninterrupted pass's (the caller restores the weights, optimiser and RNG state of the stop).

    The per-step loss and terms are written into preallocated device tensors (no host sync per
    step); their finiteness is checked every FINITE_CHECK_EVERY steps and at the end of the pass.
    With K stacked models (`names`, one per model) `loss_fn` returns K losses and K-vectors of
    terms; their sum is minimised (the models share no parameter, so each gets its own gradient)
    and each value returned is a list of K floats. `lr_at_step(step)`, where given, sets the learning
    rate of every parameter group before that step's update (a warm-up)."""
    from tqdm import tqdm

    training = optimizer is not None
    net.train(training)
    n_steps = len(batches)
    device = batches.images.device
    shape = (len(names),) if names is not None else ()
    losses = torch.empty((n_steps, *shape), dtype=torch.float64, device=device)
    terms_per_step: dict[str, torch.Tensor] = {}
    steps = 0
    if resume is not None:
        steps = int(resume["steps"])
        losses[:steps] = resume["losses"].to(device)
        for name, done in resume["terms"].items():  # in their order: it is the order of the result
            terms_per_step[name] = torch.zeros((n_steps, *shape), dtype=torch.float64, device=device)
            terms_per_step[name][:steps] = done.to(device)
    bar = tqdm(
        batches.epoch(generator, steps),
        total=n_steps,
        initial=steps,
        disable=not progress,
        leave=False,
        desc=f"{where} epoch {epoch}",
        unit="batch",
    )
    for step, x in enumerate(bar, start=steps):
        loss, terms = loss_fn(net, x)
        losses[step] = loss.detach().reshape(*shape, -1).mean(-1)
        for name, value in terms.items():
            if name not in terms_per_step:
                terms_per_step[name] = torch.zeros((n_steps, *shape), dtype=torch.float64, device=device)
            value = value.detach().float().reshape(*shape, -1).mean(-1) if torch.is_tensor(value) else float(value)
            terms_per_step[name][step] = value
        if training:
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            if lr_at_step is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at_step(step)
            optimizer.step()
        steps += 1
        if steps % FINITE_CHECK_EVERY == 0:
            _raise_if_diverged(losses, terms_per_step, steps, where=where, epoch=epoch, training=training, names=names)
        if training and stop is not None and steps < n_steps and stop():
            raise EpochStopped(
                {
                    "steps": steps,
                    "losses": losses[:steps].cpu(),
                    "terms": {name: value[:steps].cpu() for name, value in terms_per_step.items()},
                }
            )
    _raise_if_diverged(losses, terms_per_step, steps, where=where, epoch=epoch, training=training, names=names)
    count = max(steps, 1)
    means = torch.stack([losses[:steps].sum(0), *(v[:steps].sum(0) for v in terms_per_step.values())]) / count
    return dict(zip(["loss", *terms_per_step], means.tolist()))


# ---------------------------------------------------------------------------- K models at once


class StackedModels(torch.nn.Module):
    """K models of one architecture as one module: their parameters and buffers stacked along a new
    leading dimension (torch.func.stack_module_state) and registered here, so one optimiser and one
    state_dict hold all K. `apply(fn, per_model, x)` evaluates fn(model_k, x, per_model[k]) for every
    k in one vectorised call (vmap over functional_call); the random draws inside fn are the same for
    every k (randomness="same"), as in K separate runs that share a seed."""

    def __init__(self, models: list[torch.nn.Module]):
        import copy

        from torch.func import stack_module_state

        super().__init__()
        params, buffers = stack_module_state(models)
        self.k = len(models)
        self._param_names, self._buffer_names = list(params), list(buffers)
        self._state_names = list(models[0].state_dict())
        for name, value in params.items():
            self.register_parameter(self._slot(name), torch.nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            self.register_buffer(self._slot(name), value.detach().clone())
        # the architecture only: every parameter and buffer is substituted in each call
        self._base = (copy.deepcopy(models[0]).to("meta"),)  # a tuple: not a registered submodule

    @staticmethod
    def _slot(name: str) -> str:
        return name.replace(".", "__")

    def apply(self, fn: Callable, per_model: torch.Tensor, x: torch.Tensor, x_dim: int | None = None):
        """fn(model_k, x, per_model[k]) for every k; with `x_dim`, x holds one input per model along
        that dimension (model k gets x.select(x_dim, k)), else every model gets all of x."""
        from torch.func import functional_call, vmap

        base = self._base[0]
        base.train(self.training)
        call = _Call(base, fn)  # functional_call runs a forward: this one is fn(base, x, value)

        def one(params, buffers, value, x):
            return functional_call(
                call,
                {**{f"model.{k}": v for k, v in params.items()}, **{f"model.{k}": v for k, v in buffers.items()}},
                (x, value),
            )

        params = {n: getattr(self, self._slot(n)) for n in self._param_names}
        buffers = {n: getattr(self, self._slot(n)) for n in self._buffer_names}
        return vmap(one, in_dims=(0, 0, 0, x_dim), randomness="same")(params, buffers, per_model, x)

    def state_of_param(self, name: str) -> torch.Tensor:
        """Parameter `name` of all K models, stacked (detached)."""
        return getattr(self, self._slot(name)).detach()

    def state_of(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's own state_dict (its names, in its order), detached copies."""
        return {n: getattr(self, self._slot(n))[k].detach().clone() for n in self._state_names}


class _Call(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, fn: Callable):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x, value):
        return self.fn(self.model, x, value)
