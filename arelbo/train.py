"""The trainer every model shares: minibatches from in-memory tensors, validation each epoch,
best-checkpoint selection, ReduceLROnPlateau, atomic per-epoch checkpoints that resume exactly,
a per-epoch CSV log, and a clear stop on a non-finite loss.

Determinism: the shuffling of epoch e comes from a generator seeded with (seed, e), and the
reparameterisation noise from the global torch RNG whose state is saved in every checkpoint, so a
killed run restarted from its last checkpoint ends with the same weights as an uninterrupted one
(on CPU). Validation uses its own fixed noise (fork_rng) so that epochs are compared fairly and the
training noise stream is not disturbed.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .runtime import atomic_path, atomic_write_text, seed_everything

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
LOG = "train_log.csv"


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the message names the model, the epoch and the step."""


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines a training run (and must match for a checkpoint to be resumed)."""
    model_id: str
    dataset: str
    seed: int
    lr: float
    epochs: int
    batch_size: int
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    hparams: dict = field(default_factory=dict)
    # Section 3 (Tables 1, 5) trains with a constant learning rate and keeps the last epoch's
    # weights (Appendix D: "Adam, 1e-3, 200 epochs"); Table 3 models use both mechanisms.
    lr_plateau: bool = True
    keep: str = "best_val"   # or "last"


@dataclass
class Batches:
    """Shuffled minibatches drawn by index from one in-memory tensor (no Dataset/DataLoader).
    uint8 images become floats in [0, 1] per batch; float tensors (e.g. latents) pass through."""
    images: torch.Tensor  # uint8 N×C×H×W images or float N×D rows, already on the training device
    batch_size: int

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def epoch(self, generator: torch.Generator | None):
        n = len(self.images)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        order = order.to(self.images.device)
        to_float = self.images.dtype == torch.uint8
        for start in range(0, n, self.batch_size):
            batch = self.images[order[start:start + self.batch_size]]
            yield batch.float().div_(255.0) if to_float else batch


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


# How many steps may pass between two host-side checks of the losses: one .item() sync per check
# instead of one per step (a sync stalls the launch queue of a small GPU net, issue 14). A run that
# diverges stops at most this many steps late; no model file is written either way.
FINITE_CHECK_EVERY = 200


def _raise_if_diverged(losses: torch.Tensor, terms: dict[str, torch.Tensor], steps: int, *, where: str,
                       epoch: int, training: bool) -> None:
    """One host sync: raise TrainingDiverged naming the first non-finite step among the first `steps`."""
    finite = torch.isfinite(losses[:steps])
    if bool(finite.all()):
        return
    step = int((~finite).nonzero()[0, 0])
    shown = ", ".join(f"{k}={float(v[step]):.4g}" for k, v in terms.items())
    raise TrainingDiverged(
        f"{where}: non-finite loss ({float(losses[step]):.4g}) at epoch {epoch}, "
        f"{'training' if training else 'validation'} step {step} ({shown}). "
        "Lower the learning rate or check the data; no model file was written."
    )


def run_epoch(net, batches: Batches, loss_fn: Callable, *, optimizer=None, generator=None,
              where: str = "", epoch: int = 0, progress: bool = False) -> dict[str, float]:
    """One pass; returns the batch-averaged loss and terms. Trains when an optimizer is given.

    The per-step loss and terms are written into preallocated device tensors (no host sync per
    step); their finiteness is checked every FINITE_CHECK_EVERY steps and at the end of the pass."""
    from tqdm import tqdm

    training = optimizer is not None
    net.train(training)
    n_steps = len(batches)
    device = batches.images.device
    losses = torch.empty(n_steps, dtype=torch.float64, device=device)
    terms_per_step: dict[str, torch.Tensor] = {}
    steps = 0
    bar = tqdm(batches.epoch(generator), total=n_steps, disable=not progress, leave=False,
               desc=f"{where} epoch {epoch}", unit="batch")
    for step, x in enumerate(bar):
        loss, terms = loss_fn(net, x)
        losses[step] = loss.detach().float().mean()
        for name, value in terms.items():
            if name not in terms_per_step:
                terms_per_step[name] = torch.zeros(n_steps, dtype=torch.float64, device=device)
            value = value.detach().float().mean() if torch.is_tensor(value) else float(value)
            terms_per_step[name][step] = value
        if training:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        steps += 1
        if steps % FINITE_CHECK_EVERY == 0:
            _raise_if_diverged(losses, terms_per_step, steps, where=where, epoch=epoch, training=training)
    _raise_if_diverged(losses, terms_per_step, steps, where=where, epoch=epoch, training=training)
    count = max(steps, 1)
    means = torch.stack([losses[:steps].sum(), *(v[:steps].sum() for v in terms_per_step.values())]) / count
    return dict(zip(["loss", *terms_per_step], means.tolist()))


def _rng_state(device: torch.device) -> dict:
    """The RNG streams a training draws from: the CPU generator, plus the training GPU's when it
    trains on one (a CPU run never touches CUDA, even where CUDA exists)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    """Restore `_rng_state`. The states are CPU ByteTensors whatever device the checkpoint was
    written or loaded on (torch.set_rng_state and torch.cuda.set_rng_state accept nothing else)."""
    torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    if device.type == "cuda" and "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"].to("cpu", torch.uint8), device)


class SignSymmetricPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """ReduceLROnPlateau (mode min, relative threshold) whose improvement test is the same for
    objectives above and below zero: a < best − threshold·|best|.

    PyTorch's relative test is a < best·(1 − threshold); for a negative best that is
    best + threshold·|best|, so a slight worsening counts as an improvement and resets the patience.
    The AR-ELBO objectives and the trainable-Σx models once σx² < 1 are negative, and would get fewer
    halvings than the others on the same plateau (docs/reproduction-notes.md, "Learning-rate plateau").
    """

    def __init__(self, optimizer, **kwargs):
        if kwargs.get("mode", "min") != "min" or kwargs.get("threshold_mode", "rel") != "rel":
            raise ValueError("SignSymmetricPlateau is for mode='min' with a relative threshold")
        super().__init__(optimizer, mode="min", threshold_mode="rel", **{
            k: v for k, v in kwargs.items() if k not in ("mode", "threshold_mode")})

    def _is_better(self, a, best):
        if math.isinf(best):
            return a < best
        return a < best - self.threshold * abs(best)

    is_better = _is_better  # the public name of torch < 2.7


def load_checkpoint(path: Path) -> dict:
    """A checkpoint with every tensor on the CPU, whichever device wrote it: the network and
    optimiser states are then copied onto the training device by load_state_dict (Adam's `step`
    counters stay on the CPU, where Adam keeps them), and the RNG states stay CPU ByteTensors."""
    return torch.load(path, map_location="cpu", weights_only=False)


def _write_log(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def data_fingerprint(*tensors: torch.Tensor) -> str:
    """A digest of the exact images a training sees (shapes and bytes, in order): a checkpoint is
    resumed only onto the same data, whatever changed upstream (limits, val_size, a re-decoded
    cache). blake2b runs at ~1 GB/s: ~0.05 s for MNIST, ~2 s for CelebA's 2 GB training split."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(memoryview(t.view(torch.uint8).reshape(-1).numpy()) if t.numel() else b"")
    return h.hexdigest()


def fit(net: torch.nn.Module, spec: TrainSpec, train_images: torch.Tensor, val_images: torch.Tensor,
        loss_fn: Callable, out_dir: Path, *, device: torch.device, progress: bool = True,
        extra_meta: dict | None = None, keep_checkpoint: bool = False) -> Path:
    """Train `net` with `loss_fn(net, x) -> (loss, terms)`; write model.pt (best validation
    weights) and train_log.csv into out_dir.

    Resumes from out_dir/checkpoint.pt only when its settings (`spec`) and data (a fingerprint of
    the training and validation images) equal this run's; otherwise it is discarded with a log line.
    Once model.pt and train_log.csv are written the checkpoint is deleted (213 MB for an MNIST
    model), unless `keep_checkpoint` — so a forced or triggered re-run trains afresh."""
    from .runtime import ensure_writable

    out_dir = ensure_writable(out_dir)
    where = f"{spec.model_id} on {spec.dataset} (seed {spec.seed})"
    seed_everything(spec.seed)
    net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=spec.lr)
    scheduler = SignSymmetricPlateau(optimizer, factor=spec.plateau_factor, patience=spec.plateau_patience)
    train_batches = Batches(train_images.to(device), spec.batch_size)
    val_batches = Batches(val_images.to(device), spec.batch_size)
    rows: list[dict] = []
    best = {"val_loss": math.inf, "epoch": 0, "state": None}
    start_epoch = 1

    ckpt_path = out_dir / CHECKPOINT
    data = data_fingerprint(train_images, val_images)
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("spec") == asdict(spec) and ckpt.get("data") == data:
            net.load_state_dict(ckpt["net"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            rows, best, start_epoch = ckpt["rows"], ckpt["best"], ckpt["epoch"] + 1
            _set_rng_state(ckpt["rng"], device)
            log.info("%s: resuming after epoch %d from %s", where, ckpt["epoch"], ckpt_path)
        else:
            what = "settings" if ckpt.get("spec") != asdict(spec) else "data (images or limits changed)"
            log.warning("%s: discarding %s: it was written for other %s; training afresh", where, ckpt_path, what)
            ckpt_path.unlink()

    for epoch in range(start_epoch, spec.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_terms = run_epoch(net, train_batches, loss_fn, optimizer=optimizer,
                                generator=epoch_generator(spec.seed, epoch), where=where, epoch=epoch,
                                progress=progress)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(spec.seed + 7919)  # the same validation noise every epoch
            with torch.set_grad_enabled(bool(getattr(loss_fn, "needs_grad", False))):
                val_terms = run_epoch(net, val_batches, loss_fn, where=where, epoch=epoch)
        if spec.lr_plateau:
            scheduler.step(val_terms["loss"])
        improved = val_terms["loss"] < best["val_loss"] or spec.keep == "last"
        if improved:
            best = {"val_loss": val_terms["loss"], "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in net.state_dict().items()}}
        row = {"epoch": epoch, "lr": lr, "seconds": round(time.perf_counter() - started, 3)}
        row.update({f"train_{k}": v for k, v in train_terms.items()})
        row.update({f"val_{k}": v for k, v in val_terms.items()})
        row["best"] = int(improved)
        rows.append(row)
        log.info("%s epoch %d/%d: train %.4f val %.4f%s (%.1fs)", where, epoch, spec.epochs,
                 train_terms["loss"], val_terms["loss"], " *" if improved else "", row["seconds"])
        with atomic_path(ckpt_path) as tmp:
            torch.save({"spec": asdict(spec), "epoch": epoch, "net": net.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "rows": rows, "best": best, "rng": _rng_state(device), "data": data}, tmp)
        _write_log(out_dir / LOG, rows)

    if best["state"] is None:
        raise RuntimeError(f"{where}: no epoch was trained (epochs={spec.epochs}); nothing to write")
    _write_log(out_dir / LOG, rows)   # also when a finished checkpoint was resumed: no epoch left to run

    model_file = out_dir / MODEL
    meta = {"state_dict": best["state"], "spec": asdict(spec), "best_epoch": best["epoch"],
            "best_val_loss": best["val_loss"]}
    if dataclasses.is_dataclass(getattr(net, "config", None)):
        meta["net_config"] = asdict(net.config)  # enough to rebuild the network (load_trained)
    with atomic_path(model_file) as tmp:
        torch.save({**meta, **(extra_meta or {})}, tmp)
    if not keep_checkpoint and ckpt_path.exists():
        ckpt_path.unlink()   # the outputs are complete; nothing reads the resume state any more
        log.info("%s: outputs written; removed the resume state %s", where, ckpt_path)
    return model_file


# ---------------------------------------------------------------------------- the Table 3 models

def model_loss_fn(model_id: str, dataset: str, hparams: dict) -> Callable:
    """`loss_fn(net, x)` for one of the 13 models; flags whether validation needs autograd."""
    from .objectives import loss_and_terms

    def loss_fn(net, x):
        return loss_and_terms(model_id, dataset, net, x, hparams)

    # RAE-GP's penalty differentiates the decoder w.r.t. z, also when only evaluating it.
    loss_fn.needs_grad = model_id == "rae_gp"
    return loss_fn


def model_hparams(cfg, model_id: str, dataset: str) -> dict:
    """The registry's defaults (SPEC §4) overridden by the config's `hparams.<model>.<dataset>`."""
    from .objectives import MODELS

    overrides = (cfg.raw.get("hparams") or {}).get(model_id, {}).get(dataset, {})
    return MODELS[model_id].hparams(dataset, overrides)


def train_model(cfg, dataset: str, model_id: str, seed: int, out_dir: Path, *, progress: bool = True) -> Path:
    from .config import ConfigError, train_batch_problems
    from .data import load_split
    from .nets import build_net
    from .objectives import MODELS
    from .runtime import pick_device

    if model_id not in MODELS:
        raise ConfigError(f"unknown model {model_id!r}; choose one of {', '.join(MODELS)}")
    settings = getattr(cfg.train, dataset)
    train_images = load_split(dataset, "train", cfg)
    problems = train_batch_problems(cfg, dataset, len(train_images))   # before any work
    if problems:
        raise ConfigError(f"invalid config {cfg.name!r}:\n" + "\n".join(problems))
    hparams = model_hparams(cfg, model_id, dataset)
    spec = TrainSpec(model_id=model_id, dataset=dataset, seed=seed, lr=settings.lr, epochs=settings.epochs,
                     batch_size=settings.batch_size, plateau_factor=cfg.train.lr_plateau.factor,
                     plateau_patience=cfg.train.lr_plateau.patience, hparams=hparams)
    seed_everything(seed)  # network initialisation
    net = build_net(model_id, dataset)
    device = pick_device(cfg.device)
    return fit(net, spec, train_images, load_split(dataset, "val", cfg),
               model_loss_fn(model_id, dataset, hparams), out_dir, device=device, progress=progress,
               extra_meta={"config_name": cfg.name}, keep_checkpoint=cfg.keep_checkpoints)


def load_trained(model_file: Path, device=None):
    """(net in eval mode, metadata) from a model.pt written by `train_model`."""
    from .nets import VAE, NetConfig

    meta = torch.load(model_file, map_location="cpu", weights_only=False)
    net = VAE(NetConfig(**meta["net_config"]))
    net.load_state_dict(meta["state_dict"])
    net.eval()
    if device is not None:
        net.to(device)
    return net, meta
