"""The trainer every model shares: minibatches from in-memory tensors, validation each epoch,
best-checkpoint selection, ReduceLROnPlateau, atomic per-epoch checkpoints that resume exactly,
a per-epoch CSV log, and a clear stop on a non-finite loss.

Determinism: the shuffling of epoch e comes from a generator seeded with (seed, e), and the
reparameterisation noise from the global torch RNG whose state is saved in every checkpoint, so a
killed run restarted from its last checkpoint ends with the same weights as an uninterrupted one
(on CPU). Validation uses its own fixed noise (fork_rng) so that epochs are compared fairly and the
training noise stream is not disturbed. SIGTERM and SIGINT stop a training between two steps with a
checkpoint of the steps done (`stop_on_signals`, `TrainingStopped`): nothing is lost but that step.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from arelbo.core import layout
from arelbo.core.config import CheckpointPolicy
from arelbo.core.precision import PRECISIONS
from arelbo.core.runtime import atomic_torch_save, atomic_write_text, remove_stray_temporaries, seed_everything
from arelbo.models.training import (  # noqa: F401 - TrainingDiverged, run_epoch: part of this stage's API
    Batches,
    EpochStopped,
    StackedModels,
    TrainingDiverged,
    epoch_generator,
    run_epoch,
)

log = logging.getLogger(__name__)

# A training folder's files (their names live in arelbo.core.layout)
CHECKPOINT, MODEL, LOG = layout.CHECKPOINT_FILE, layout.MODEL_FILE, layout.TRAIN_LOG
# A library call of fit() without a config's `train.checkpoint`: resume state after every epoch.
EVERY_EPOCH = CheckpointPolicy(every_epochs=1, every_minutes=None)


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
    keep: str = "best_val"  # or "last"
    # arelbo.core.precision.PRECISIONS: part of the resume key, it changes the arithmetic
    precision: str = "fp32"
    # Open choices (config `choices`, arelbo.core.open_choices): how images are scaled, Adam's ε, and a
    # linear learning-rate warm-up over the first `warmup_epochs` epochs (0: none)
    data: str = "unit"
    adam_epsilon: float = 1e-8
    warmup_epochs: int = 0

    def optimizer(self, parameters) -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, lr=self.lr, eps=self.adam_epsilon)

    def batches(self, images: torch.Tensor, device: torch.device) -> Batches:
        return Batches(images.to(device), self.batch_size, dequantize=self.data == "dequantized")

    def warming_up(self, epoch: int) -> bool:
        return epoch <= self.warmup_epochs

    def warmup_lr(self, epoch: int, steps_per_epoch: int) -> Callable[[int], float] | None:
        """The learning rate of each step of `epoch` during the warm-up: rising linearly from lr/N to
        lr over the warm-up's N steps; None after it (the optimiser's own, which the plateau lowers)."""
        if not self.warming_up(epoch):
            return None
        total = self.warmup_epochs * steps_per_epoch
        done = (epoch - 1) * steps_per_epoch
        return lambda step: self.lr * (done + step + 1) / total


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
    halvings than the others on the same plateau (docs/design.md, "Learning-rate plateau").
    """

    def __init__(self, optimizer, **kwargs):
        if kwargs.get("mode", "min") != "min" or kwargs.get("threshold_mode", "rel") != "rel":
            raise ValueError("SignSymmetricPlateau is for mode='min' with a relative threshold")
        super().__init__(
            optimizer,
            mode="min",
            threshold_mode="rel",
            **{k: v for k, v in kwargs.items() if k not in ("mode", "threshold_mode")},
        )

    def _is_better(self, a, best):
        if math.isinf(best):
            return a < best
        return a < best - self.threshold * abs(best)

    is_better = _is_better  # the public name of torch < 2.7


def load_checkpoint(path: Path) -> dict:
    """A checkpoint with every tensor on the CPU, whichever device wrote it: the network and
    optimiser states are then copied onto the training device by load_state_dict (Adam's `step`
    counters stay on the CPU, where Adam keeps them), and the RNG states stay CPU ByteTensors.
    Read without running code (arelbo.core.safeload: tensors and plain values only, which is all a
    checkpoint holds); UnreadableFile for a truncated, corrupt or unsafe one."""
    from arelbo.core.safeload import UnreadableFile, load_torch

    fix = "delete it to train afresh"  # what _matching_checkpoint does with it
    ckpt = load_torch(path, fix=fix)
    if not isinstance(ckpt, dict):
        raise UnreadableFile(path, "is not a training checkpoint (no dict inside)", fix)
    return ckpt


# What a model.pt that cannot be read needs: its training is simply run again.
MODEL_FIX = "delete it and re-run to train the model again"


def load_model_meta(model_file: Path) -> dict:
    """The dict of a model.pt (`_write_model`: state dict, spec, metadata), read without running code;
    UnreadableFile naming the file and MODEL_FIX for a truncated, corrupt or unsafe one."""
    from arelbo.core.safeload import UnreadableFile, load_torch

    meta = load_torch(model_file, fix=MODEL_FIX)
    if not isinstance(meta, dict) or "state_dict" not in meta:
        raise UnreadableFile(model_file, "is not a model.pt written by arelbo (no state_dict)", MODEL_FIX)
    return meta


# The log's columns that measure time, not training: they differ between two runs of one training
TIME_COLUMNS = ("seconds", "cpu_user_s", "cpu_system_s")


class EpochClock:
    """An epoch's wall seconds and its process's CPU seconds in user code and in the kernel, for its
    log row. The kernel's share is where an allocator that faults on every step shows
    (arelbo.core.allocator); the CPU seconds count every thread of the process."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), os.times()

    def times(self) -> dict[str, float]:
        now = os.times()
        return {
            "seconds": round(time.perf_counter() - self.wall, 3),
            "cpu_user_s": round(now.user - self.cpu.user, 3),
            "cpu_system_s": round(now.system - self.cpu.system, 3),
        }


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
    cache). One blake2b pass over the split: cheap next to one epoch."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(memoryview(t.view(torch.uint8).reshape(-1).numpy()) if t.numel() else b"")
    return h.hexdigest()


def _cpu_snapshot(tree):
    """A copy of a nested checkpoint dict with every tensor detached and copied to the CPU, so that
    training can go on changing the live tensors while a background thread writes the copy."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda v: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v, tree)


class CheckpointWriter:
    """Writes checkpoints off the training loop's critical path: the state is snapshotted to the CPU
    in the loop (fast: a device-to-host copy) and torch.save + the atomic rename run on one background
    thread (a CelebA checkpoint is hundreds of MB). One write at a time: a new write first waits for the
    previous one; `wait()` (before the outputs are written, and at the end) re-raises its error."""

    def __init__(self):
        import concurrent.futures

        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending = None

    def write(self, path: Path, state: dict) -> None:
        self.wait()
        snapshot = _cpu_snapshot(state)

        self._pending = self._pool.submit(atomic_torch_save, path, snapshot)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


# The signals that stop a training at its next step with a checkpoint: SIGTERM is what SLURM sends at
# a time limit or preemption and what Snakemake sends its jobs when it is stopped; SIGINT is Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(SystemExit):
    """A training stopped by a signal after writing its checkpoint. Its exit status is 128 + the
    signal's number (143 for SIGTERM, 130 for SIGINT), what a shell reports for a process that signal
    killed: non-zero, so Snakemake counts the job as failed and runs it again under --retries (and a
    SLURM requeue runs it again), and the run resumes from the checkpoint. Exit 0 would claim a
    finished training without its model.pt."""

    def __init__(self, signum: int, where: str, checkpoint: Path):
        super().__init__(128 + signum)
        self.signum, self.where, self.checkpoint = signum, where, checkpoint


class StopRequest:
    """Whether a stop signal has arrived (call it); `signum` is the first that did."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals():
    """A StopRequest set by STOP_SIGNALS while the block runs; the previous handlers afterwards.
    The handler only records the signal (the training checks it between steps); a second signal is
    ignored as well, so that Ctrl-C followed by Snakemake's SIGTERM still ends with a checkpoint.
    Off the main thread, where Python cannot handle signals, the request is never set."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request.signum is None:
            request.signum = signum

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    try:
        yield request
    finally:
        for signum, before in previous.items():
            # None: a handler installed outside Python, which cannot be put back; the default then
            signal.signal(signum, before if before is not None else signal.SIG_DFL)


def _stop(writer: CheckpointWriter, path: Path, state: dict, signum: int, where: str) -> TrainingStopped:
    """Write the resume state now (after any write in flight) and return the exception that ends the job."""
    writer.write(path, state)
    writer.wait()
    name = signal.Signals(signum).name
    epoch = state["epoch"] + (1 if "partial" in state else 0)
    step = f", step {int(state['partial']['steps'])}" if "partial" in state else ""
    log.warning(
        "%s: %s received: stopped in epoch %d%s and wrote %s; exiting with status %d, a re-run resumes from it",
        where,
        name,
        epoch,
        step,
        path,
        128 + signum,
    )
    return TrainingStopped(signum, where, path)


def _clean_strays(checkpoint: Path, where: str) -> None:
    """Remove the temporaries of a checkpoint write that a SIGKILL (or a power cut) cut short."""
    for stray in remove_stray_temporaries(checkpoint):
        log.info("%s: removed %s, left by a checkpoint write that was killed", where, stray)


def threads_of(rows: list[dict]) -> int | str | None:
    """The torch thread count of a training log's epochs: one int, or "1,2" (in epoch order) when a
    resumed run changed it; None for a log written before the column existed."""
    counts = list(dict.fromkeys(int(r["threads"]) for r in rows if r.get("threads") not in (None, "")))
    if not counts:
        return None
    return counts[0] if len(counts) == 1 else ",".join(map(str, counts))


def training_threads(log_file: Path) -> int | str | None:
    """`threads_of` a train_log.csv; None when there is no log."""
    if not Path(log_file).is_file():
        return None
    with open(log_file, newline="") as f:
        return threads_of(list(csv.DictReader(f)))


def _matching_checkpoint(path: Path, spec: dict, data: str, where: str) -> dict | None:
    """The checkpoint at `path` if its settings and data equal this run's; otherwise it is deleted
    (with a log line saying why) and None is returned, so the run trains afresh."""
    from arelbo.core.safeload import UnreadableFile

    if not path.is_file():
        return None
    try:
        ckpt = load_checkpoint(path)
    except UnreadableFile as exc:
        # a checkpoint cut by a kill or a full disk, or one that needs an unsafe load, holds nothing
        # to resume: without this every re-run would stop on it until it is deleted by hand
        log.warning("%s: discarding %s: it %s; training afresh", where, path, exc.problem)
        path.unlink()
        return None
    if ckpt.get("spec") == spec and ckpt.get("data") == data:
        log.info("%s: resuming after epoch %d from %s", where, ckpt["epoch"], path)
        return ckpt
    what = "settings" if ckpt.get("spec") != spec else "data (images or limits changed)"
    log.warning("%s: discarding %s: it was written for other %s; training afresh", where, path, what)
    path.unlink()
    return None


def _validate(
    net,
    val_batches: Batches,
    loss_fn: Callable,
    *,
    seed: int,
    device: torch.device,
    where: str,
    epoch: int,
    names: list[str] | None = None,
) -> dict:
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed + 7919)  # the same validation noise every epoch
        with torch.set_grad_enabled(bool(getattr(loss_fn, "needs_grad", False))):
            return run_epoch(net, val_batches, loss_fn, where=where, epoch=epoch, names=names)


def _write_model(
    out_dir: Path, state: dict, spec: TrainSpec, best_epoch: int, best_val_loss: float, extra_meta: dict, rows
) -> Path:
    """model.pt: the weights, the settings, the epoch kept and `threads`, the torch thread count the
    training ran with (its log's epochs: `threads_of`). Saved through `atomic_torch_save`, so equal
    weights and metadata give byte-identical files."""
    model_file = out_dir / MODEL
    meta = {
        "state_dict": state,
        "spec": asdict(spec),
        "best_epoch": best_epoch,
        "best_val_loss": best_val_loss,
        "threads": threads_of(rows),
    }
    atomic_torch_save(model_file, {**meta, **extra_meta})
    return model_file


def _remove_resume_state(ckpt_path: Path, where: str) -> None:
    if ckpt_path.exists():
        ckpt_path.unlink()  # the outputs are complete; nothing reads the resume state any more
        log.info("%s: outputs written; removed the resume state %s", where, ckpt_path)


@dataclass
class _EpochLoop:
    """What `_fit` and `fit_batched` share around each epoch: its training pass, which a stop signal
    between two steps turns into a checkpoint of the steps done and a 128 + signal exit, and its end,
    where a stop or the checkpoint cadence writes the resume state."""

    spec: TrainSpec  # the (first) model's: seed, epochs, warm-up
    where: str
    stop: Callable[[], bool]
    writer: CheckpointWriter
    checkpoint: Path
    resume_state: Callable[..., dict]
    checkpoints: CheckpointPolicy
    keep_checkpoint: bool
    last_write: float = field(default_factory=time.monotonic)

    def train_pass(self, net, batches: Batches, loss_fn, optimizer, epoch: int, *, progress, partial, names=None):
        try:
            return run_epoch(
                net,
                batches,
                loss_fn,
                optimizer=optimizer,
                generator=epoch_generator(self.spec.seed, epoch),
                where=self.where,
                epoch=epoch,
                progress=progress,
                names=names,
                stop=self.stop,
                resume=partial,
                lr_at_step=self.spec.warmup_lr(epoch, len(batches)),
            )
        except EpochStopped as stopped:
            # Between two steps, not at the epoch's end: a CPU epoch can outlast SLURM's grace
            # period before SIGKILL. The steps' losses go with it, so the resumed epoch logs
            # what an uninterrupted one does.
            state = self.resume_state(epoch - 1, {"epoch": epoch, **stopped.state})
            raise _stop(self.writer, self.checkpoint, state, self.stop.signum, self.where) from None

    def end(self, epoch: int) -> None:
        if self.stop() and epoch < self.spec.epochs:  # after the last epoch the outputs are seconds away
            raise _stop(self.writer, self.checkpoint, self.resume_state(epoch), self.stop.signum, self.where)
        last = epoch == self.spec.epochs
        if self.checkpoints.due(epoch, self.last_write, time.monotonic()) or (self.keep_checkpoint and last):
            self.writer.write(self.checkpoint, self.resume_state(epoch))
            self.last_write = time.monotonic()


def fit(net: torch.nn.Module, spec: TrainSpec, *args, **kwargs) -> Path:
    """Train `net` at `spec.precision` (arelbo.core.precision: the TF32 switches are set for the
    training and restored after it); see `_fit` for the rest."""
    from arelbo.core.precision import arithmetic

    with arithmetic(spec.precision):
        return _fit(net, spec, *args, **kwargs)


def _fit(
    net: torch.nn.Module,
    spec: TrainSpec,
    train_images: torch.Tensor,
    val_images: torch.Tensor,
    loss_fn: Callable,
    out_dir: Path,
    *,
    device: torch.device,
    progress: bool = True,
    extra_meta: dict | None = None,
    keep_checkpoint: bool = False,
    checkpoints: CheckpointPolicy = EVERY_EPOCH,
) -> Path:
    """Train `net` with `loss_fn(net, x) -> (loss, terms)`; write model.pt (best validation
    weights) and train_log.csv into out_dir.

    Resumes from out_dir/checkpoint.pt only when its settings (`spec`) and data (a fingerprint of
    the training and validation images) equal this run's; otherwise it is discarded with a log line.
    Once model.pt and train_log.csv are written the checkpoint is deleted (213 MB for an MNIST
    model), unless `keep_checkpoint` — so a forced or triggered re-run trains afresh. Checkpoints are
    written when `checkpoints` says (and after the last epoch when kept), in the background, and at
    once when SIGTERM or SIGINT stops the training after its current step (TrainingStopped)."""
    from arelbo.core.runtime import ensure_writable

    out_dir = ensure_writable(out_dir)
    where = f"{spec.model_id} on {spec.dataset} (seed {spec.seed})"
    seed_everything(spec.seed)
    net.to(device)
    if spec.precision == "bf16":
        net.trunk_dtype = torch.bfloat16
    if device.type == "cuda":
        # cuDNN's NHWC kernels (tensor cores; the CelebA net's 1024-channel convolutions) — the same
        # network and weights, only the memory layout of its 4-D tensors changes
        net.to(memory_format=torch.channels_last)
    optimizer = spec.optimizer(net.parameters())
    scheduler = SignSymmetricPlateau(optimizer, factor=spec.plateau_factor, patience=spec.plateau_patience)
    train_batches, val_batches = spec.batches(train_images, device), spec.batches(val_images, device)
    rows: list[dict] = []
    best = {"val_loss": math.inf, "epoch": 0, "state": None}
    start_epoch = 1

    ckpt_path = out_dir / CHECKPOINT
    _clean_strays(ckpt_path, where)
    data = data_fingerprint(train_images, val_images)
    ckpt = _matching_checkpoint(ckpt_path, asdict(spec), data, where)
    partial = None  # the state of an epoch a signal stopped between two steps (run_epoch's `resume`)
    if ckpt is not None:
        net.load_state_dict(ckpt["net"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        rows, best, start_epoch = ckpt["rows"], ckpt["best"], ckpt["epoch"] + 1
        _set_rng_state(ckpt["rng"], device)
        partial = ckpt.get("partial")

    def resume_state(epoch: int, within: dict | None = None) -> dict:
        """The checkpoint after `epoch` full epochs, plus the steps done of the next one (`within`)."""
        state = {
            "spec": asdict(spec),
            "epoch": epoch,
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rows": rows,
            "best": best,
            "rng": _rng_state(device),
            "data": data,
        }
        return state if within is None else {**state, "partial": within}

    writer = CheckpointWriter()
    with stop_on_signals() as stop:
        loop = _EpochLoop(spec, where, stop, writer, ckpt_path, resume_state, checkpoints, keep_checkpoint)
        try:
            for epoch in range(start_epoch, spec.epochs + 1):
                clock = EpochClock()
                lr = optimizer.param_groups[0]["lr"]
                train_terms = loop.train_pass(
                    net,
                    train_batches,
                    loss_fn,
                    optimizer,
                    epoch,
                    progress=progress,
                    partial=partial if epoch == start_epoch else None,
                )
                val_terms = _validate(
                    net, val_batches, loss_fn, seed=spec.seed, device=device, where=where, epoch=epoch
                )
                if spec.lr_plateau and not spec.warming_up(epoch):
                    scheduler.step(val_terms["loss"])
                improved = val_terms["loss"] < best["val_loss"] or spec.keep == "last"
                if improved:
                    best = {
                        "val_loss": val_terms["loss"],
                        "epoch": epoch,
                        "state": {k: v.detach().clone() for k, v in net.state_dict().items()},
                    }
                row = {"epoch": epoch, "lr": lr, **clock.times(), "threads": torch.get_num_threads()}
                row.update({f"train_{k}": v for k, v in train_terms.items()})
                row.update({f"val_{k}": v for k, v in val_terms.items()})
                row["best"] = int(improved)
                rows.append(row)
                log.info(
                    "%s epoch %d/%d: train %.4f val %.4f%s (%.1fs)",
                    where,
                    epoch,
                    spec.epochs,
                    train_terms["loss"],
                    val_terms["loss"],
                    " *" if improved else "",
                    row["seconds"],
                )
                _write_log(out_dir / LOG, rows)
                loop.end(epoch)
        finally:
            writer.close()  # also on an error: the last checkpoint started is complete on disk

        if best["state"] is None:
            raise RuntimeError(f"{where}: no epoch was trained (epochs={spec.epochs}); nothing to write")
        # A stop signal from here on is ignored (the handlers are still ours): the outputs are seconds
        # away, and a job that writes them has finished
        _write_log(out_dir / LOG, rows)  # also when a finished checkpoint was resumed: no epoch left to run
        extra = dict(extra_meta or {})
        if dataclasses.is_dataclass(getattr(net, "config", None)):
            extra["net_config"] = asdict(net.config)  # enough to rebuild the network (load_trained)
        try:
            model_file = _write_model(out_dir, best["state"], spec, best["epoch"], best["val_loss"], extra, rows)
        except BaseException:
            (out_dir / LOG).unlink(missing_ok=True)  # no finished-looking log beside a model that was not written
            raise
        if not keep_checkpoint:
            _remove_resume_state(ckpt_path, where)
        return model_file


def fit_batched(models: list[torch.nn.Module], specs: list[TrainSpec], *args, **kwargs) -> list[Path]:
    """`_fit_batched` at the models' common precision (fp32 or tf32: the TF32 switches are set for
    the training and restored after it)."""
    from arelbo.core.precision import arithmetic

    precisions = {spec.precision for spec in specs}
    if len(precisions) != 1 or precisions & {"bf16"}:
        raise ValueError(f"batched models train at one precision, fp32 or tf32; these ask for {sorted(precisions)}")
    with arithmetic(specs[0].precision):
        return _fit_batched(models, specs, *args, **kwargs)


def _fit_batched(
    models: list[torch.nn.Module],
    specs: list[TrainSpec],
    per_model: torch.Tensor,
    train_images: torch.Tensor,
    val_images: torch.Tensor,
    loss_fn: Callable,
    out_dirs: list[Path],
    checkpoint: Path,
    *,
    device: torch.device,
    progress: bool = True,
    extra_metas: list[dict] | None = None,
    keep_checkpoint: bool = False,
    checkpoints: CheckpointPolicy = EVERY_EPOCH,
) -> list[Path]:
    """Train K same-architecture models that differ only in a scalar as one vectorised training:
    `loss_fn(model, x, value) -> (loss, terms)` for one model, `per_model` its K values. Each model
    k gets what `fit` would have written for it — out_dirs[k]/model.pt and train_log.csv — equal to
    K separate `fit` runs on the same seed to float tolerance (same initial weights, batches and
    noise; Adam is elementwise, so one Adam over the stacked parameters is K Adams).

    For constant-learning-rate runs that keep the last epoch (Section 3's settings): a plateau
    schedule or best-validation selection would differ per model and is refused. The resume state
    of the group is one checkpoint (`checkpoint`), resumed only onto the same K specs and data."""
    from arelbo.core.runtime import ensure_writable

    k_models = len(models)
    if not (k_models == len(specs) == len(out_dirs) == len(per_model)):
        raise ValueError("fit_batched needs one spec, one value and one output folder per model")
    shared = {key: value for key, value in asdict(specs[0]).items() if key not in ("model_id", "hparams")}
    for spec in specs:
        if {key: value for key, value in asdict(spec).items() if key in shared} != shared:
            raise ValueError(f"batched models must share every training setting; {spec.model_id} differs")
    if specs[0].lr_plateau or specs[0].keep != "last":
        raise ValueError(
            "batched training is for constant-lr runs keeping the last epoch (lr_plateau=False, "
            "keep='last'); train these models one by one"
        )
    names = [spec.model_id for spec in specs]
    spec0 = specs[0]
    where = f"{k_models} batched models on {spec0.dataset} (seed {spec0.seed})"
    out_dirs = [ensure_writable(d) for d in out_dirs]
    ensure_writable(checkpoint.parent)
    seed_everything(spec0.seed)
    net = StackedModels(models).to(device)
    per_model = per_model.to(device)
    optimizer = spec0.optimizer(net.parameters())
    train_batches, val_batches = spec0.batches(train_images, device), spec0.batches(val_images, device)

    def batched_loss(stacked, x):
        return stacked.apply(loss_fn, per_model, x)

    batched_loss.needs_grad = bool(getattr(loss_fn, "needs_grad", False))
    key = [asdict(spec) for spec in specs]
    data = data_fingerprint(train_images, val_images)
    rows: list[list[dict]] = [[] for _ in models]
    start_epoch = 1
    _clean_strays(checkpoint, where)
    ckpt = _matching_checkpoint(checkpoint, key, data, where)
    partial = None  # as in `_fit`: the steps done of an epoch a signal stopped
    if ckpt is not None:
        net.load_state_dict(ckpt["net"])
        optimizer.load_state_dict(ckpt["optimizer"])
        rows, start_epoch = ckpt["rows"], ckpt["epoch"] + 1
        _set_rng_state(ckpt["rng"], device)
        partial = ckpt.get("partial")

    def resume_state(epoch: int, within: dict | None = None) -> dict:
        state = {
            "spec": key,
            "epoch": epoch,
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rows": rows,
            "rng": _rng_state(device),
            "data": data,
        }
        return state if within is None else {**state, "partial": within}

    writer = CheckpointWriter()
    with stop_on_signals() as stop:
        loop = _EpochLoop(spec0, where, stop, writer, checkpoint, resume_state, checkpoints, keep_checkpoint)
        try:
            for epoch in range(start_epoch, spec0.epochs + 1):
                clock = EpochClock()
                lr = optimizer.param_groups[0]["lr"]
                train_terms = loop.train_pass(
                    net,
                    train_batches,
                    batched_loss,
                    optimizer,
                    epoch,
                    progress=progress,
                    partial=partial if epoch == start_epoch else None,
                    names=names,
                )
                val_terms = _validate(
                    net,
                    val_batches,
                    batched_loss,
                    seed=spec0.seed,
                    device=device,
                    where=where,
                    epoch=epoch,
                    names=names,
                )
                times, threads = clock.times(), torch.get_num_threads()
                seconds = times["seconds"]
                for k in range(k_models):
                    # the times are of the whole batched epoch (all K models), as `batched` says
                    row = {"epoch": epoch, "lr": lr, **times, "threads": threads, "batched": k_models}
                    row.update({f"train_{name}": values[k] for name, values in train_terms.items()})
                    row.update({f"val_{name}": values[k] for name, values in val_terms.items()})
                    row["best"] = 1
                    rows[k].append(row)
                log.info(
                    "%s epoch %d/%d: train %s (%.1fs)",
                    where,
                    epoch,
                    spec0.epochs,
                    " ".join(f"{v:.4f}" for v in train_terms["loss"]),
                    seconds,
                )
                loop.end(epoch)
        finally:
            writer.close()

        # a stop signal from here on is ignored, as in `_fit`
        if not rows[0]:
            raise RuntimeError(f"{where}: no epoch was trained (epochs={spec0.epochs}); nothing to write")
        files = []
        for k, (spec, out_dir) in enumerate(zip(specs, out_dirs)):
            last = rows[k][-1]
            files.append(
                _write_model(
                    out_dir,
                    net.state_of(k),
                    spec,
                    last["epoch"],
                    last["val_loss"],
                    dict((extra_metas or [{}] * k_models)[k]),
                    rows[k],
                )
            )
            _write_log(out_dir / LOG, rows[k])  # after its model: a log is never left beside a missing model
        if not keep_checkpoint:
            _remove_resume_state(checkpoint, where)
        return files


# ---------------------------------------------------------------------------- the Table 3 models


def model_loss_fn(model_id: str, dataset: str, hparams: dict) -> Callable:
    """`loss_fn(net, x)` for a registered model; flags whether validation needs autograd."""
    from arelbo.models.objectives import MODELS, loss_and_terms

    def loss_fn(net, x):
        return loss_and_terms(model_id, dataset, net, x, hparams)

    # e.g. RAE-GP's penalty differentiates the decoder w.r.t. z, also when only evaluating it
    loss_fn.needs_grad = MODELS[model_id].validation_needs_grad
    return loss_fn


def model_hparams(cfg, model_id: str, dataset: str) -> dict:
    """The registry's defaults (docs/design.md §4) overridden by the config's `hparams.<model>.<dataset>`."""
    from arelbo.models.objectives import MODELS

    overrides = (cfg.raw.get("hparams") or {}).get(model_id, {}).get(dataset, {})
    return MODELS[model_id].hparams(dataset, overrides)


def model_precision(cfg, dataset: str, model_id: str, device) -> str:
    """The precision `model_id` trains at on `device` under `cfg` (arelbo.core.precision)."""
    from arelbo.core.precision import training_precision
    from arelbo.models.objectives import MODELS

    entry = MODELS[model_id]
    return training_precision(
        getattr(cfg.train, dataset).precision,
        bf16_safe=entry.bf16_safe,
        tf32_safe=entry.tf32_safe,
        device_type=torch.device(device).type,
        deterministic=cfg.cuda_deterministic,
    )


def train_model(cfg, dataset: str, model_id: str, seed: int, out_dir: Path, *, progress: bool = True) -> Path:
    from arelbo.core.config import ConfigError, train_batch_problems
    from arelbo.core.runtime import pick_device
    from arelbo.models.nets import build_net
    from arelbo.models.objectives import MODELS
    from arelbo.stages.data import load_split

    if model_id not in MODELS:
        raise ConfigError(f"unknown model {model_id!r}; choose one of {', '.join(MODELS)}")
    settings = getattr(cfg.train, dataset)
    train_images = load_split(dataset, "train", cfg)
    problems = train_batch_problems(cfg, dataset, len(train_images))  # before any work
    if problems:
        raise ConfigError(f"invalid config {cfg.name!r}:\n" + "\n".join(problems))
    hparams = model_hparams(cfg, model_id, dataset)
    device = pick_device(cfg.device)
    precision = model_precision(cfg, dataset, model_id, device)
    tf32_available = device.type == "cuda" and not cfg.cuda_deterministic
    if PRECISIONS.index(precision) < PRECISIONS.index(settings.precision) and (
        settings.precision == "bf16" or tf32_available
    ):
        log.info(
            '%s trains in %s, not %s: the precision policy keeps it there (docs/design.md, "Precision policy")',
            model_id,
            precision,
            settings.precision,
        )
    spec = TrainSpec(
        model_id=model_id,
        dataset=dataset,
        seed=seed,
        lr=settings.lr,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        plateau_factor=cfg.train.lr_plateau.factor,
        plateau_patience=cfg.train.lr_plateau.patience,
        hparams=hparams,
        precision=precision,
        data=cfg.choices.data,
        adam_epsilon=cfg.choices.adam_epsilon,
        warmup_epochs=cfg.choices.lr_warmup_epochs,
    )
    seed_everything(seed)  # network initialisation
    net = build_net(model_id, dataset, **cfg.choices.net_options())
    return fit(
        net,
        spec,
        train_images,
        load_split(dataset, "val", cfg),
        model_loss_fn(model_id, dataset, hparams),
        out_dir,
        device=device,
        progress=progress,
        extra_meta={"config_name": cfg.name},
        keep_checkpoint=cfg.keep_checkpoints,
        checkpoints=cfg.train.checkpoint,
    )


def load_trained(model_file: Path, device=None):
    """(net in eval mode, metadata) from a model.pt written by `train_model`."""
    from arelbo.models.nets import VAE, NetConfig

    meta = load_model_meta(model_file)
    net = VAE(NetConfig(**meta["net_config"]))
    net.load_state_dict(meta["state_dict"])
    net.eval()
    if device is not None:
        net.to(device)
    return net, meta
