"""Small runtime helpers shared by every stage: device choice, seeding, atomic file writes, hashing."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

from arelbo.core.errors import ArelboError


class DeviceError(ArelboError, RuntimeError):
    """The configured device cannot be used here; the message says what to change."""


def nvidia_driver_version() -> str | None:
    """The NVIDIA kernel driver's version when one is loaded (a GPU is present), else None.

    Read from /proc (no subprocess): present whenever the driver is, whether or not torch can use it.
    """
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    import re

    match = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([0-9][0-9.]+)", text)
    return match.group(1) if match else text.strip().splitlines()[0][:80]


def _cuda_unusable_reason() -> str:
    """Why torch cannot use a present NVIDIA GPU, with both versions a user needs to fix it."""
    import torch

    driver = nvidia_driver_version()
    return (
        f"an NVIDIA GPU is present (driver {driver}) but torch {torch.__version__} cannot use it "
        f"(torch.cuda.is_available() is False; this torch build needs CUDA "
        f"{torch.version.cuda or 'none: it is a CPU-only build'}). Install a torch wheel whose CUDA "
        "version the driver supports (see `nvidia-smi`), or update the driver"
    )


def pick_device(requested: str | None = None):
    """`requested` ("cpu", "cuda", "cuda:1", "auto"/None) → torch.device; auto prefers CUDA.

    `auto` on a machine with an NVIDIA GPU that torch cannot use warns loudly (once per process)
    rather than silently running a GPU-sized workload on the CPU; an explicit `cuda` without a usable
    GPU is a DeviceError before any work.
    """
    import torch

    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if nvidia_driver_version() is not None:
            _warn_once(
                "device: auto falls back to the CPU: " + _cuda_unusable_reason() + ". Set "
                "`device: cpu` to silence this, or `device: cuda` to make it an error."
            )
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise DeviceError(
            f"device {requested!r} is not a device torch knows ({exc}); use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                _cuda_unusable_reason()
                if nvidia_driver_version() is not None
                else "no NVIDIA GPU or driver is present on this machine"
            )
            raise DeviceError(
                f"device {requested!r} was requested but CUDA is not usable: {why}. "
                "Set `device: auto` or `cpu` to run on the CPU."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) here "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    return device


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    import logging
    import warnings

    if message in _WARNED:
        return
    _WARNED.add(message)
    logging.getLogger("arelbo").warning("%s", message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def configure_cuda_determinism(deterministic: bool) -> None:
    """`cuda_deterministic: true`: deterministic kernels everywhere (an error where none exists),
    no TF32 in convolutions or matmuls, cuDNN's autotuner off and cuBLAS's workspace pinned — what
    PyTorch's reproducibility notes ask for. false turns cuDNN's autotuner on and otherwise leaves
    PyTorch's defaults (cuDNN convolutions may use TF32 on Ampere and newer; some backward kernels use
    atomics)."""
    import torch

    if not deterministic:
        # cuDNN's autotuner: each training's shapes are fixed, so the fastest convolution algorithms
        # are found once (the first steps) and reused; its choice may differ between runs
        torch.backends.cudnn.benchmark = True
        return
    # must be set before cuBLAS creates its handle: this runs at job start, before any CUDA work
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def device_info(device) -> dict:
    """Which device a job ran on, never a guess: recorded in every log and metric/criteria record."""
    import platform

    import torch

    from arelbo.core import allocator
    from arelbo.core.precision import current_precision

    device = torch.device(device)
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host": platform.node(),
        "precision": current_precision(device.type),  # the FP32 arithmetic the record was computed in
        # torch's intra-op CPU threads: they change how CPU sums are split, hence the last bits of a
        # result (a GPU job still runs its CPU-side steps with them)
        "threads": torch.get_num_threads(),
        # where host memory comes from (arelbo.core.allocator): not the arithmetic, but the speed
        "allocator": allocator.describe(),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["device"] = f"cuda:{index}"
        info["device_name"] = torch.cuda.get_device_name(index)
        info["cudnn"] = torch.backends.cudnn.version()
        info["driver"] = nvidia_driver_version()
        info["deterministic"] = torch.are_deterministic_algorithms_enabled()
        info["tf32_conv"] = bool(torch.backends.cudnn.allow_tf32)
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def describe_device(info: dict) -> str:
    if "cudnn" in info:
        extra = (
            f", cuDNN {info['cudnn']}, driver {info['driver']}, deterministic={info['deterministic']}, "
            f"TF32 convolutions={info['tf32_conv']}, {info.get('threads')} CPU threads"
        )
    else:
        extra = f", {info.get('threads')} threads"
    return (
        f"{info['device']} ({info['device_name']}) on {info['host']}: torch {info['torch']}, "
        f"CUDA {info['cuda'] or 'none (CPU build)'}{extra}; allocator: {info.get('allocator', 'not recorded')}"
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class OutOfSpace(ArelboError, OSError):
    """A write failed because the disk is full; says which file, how much is free and what to do."""

    def __init__(self, final: Path, cause: BaseException):
        import shutil

        free = shutil.disk_usage(final.parent).free
        super().__init__(
            errno.ENOSPC,
            (
                f"no space left on the device holding {final} ({free / 2**20:.0f} MiB free) — the write failed "
                f"({type(cause).__name__}: {str(cause)[:120]}). Nothing was written there. Free some space, or "
                "point `outdir`/`resources` at a larger disk, and re-run: finished outputs are kept."
            ),
        )


class NotWritable(ArelboError, OSError):
    """The output's folder cannot be written (read-only file system, permissions)."""

    def __init__(self, final: Path, cause: OSError):
        super().__init__(
            cause.errno,
            (
                f"cannot write {final}: {cause.strerror or cause} ({cause.filename or final.parent}). The output "
                "folder is read-only or not yours: make it writable, or point `outdir`/`resources` elsewhere."
            ),
        )


class WriteFailed(ArelboError, OSError):
    """Any other write of an output that failed: which file, the error, and what to do, in one line."""

    def __init__(self, final: Path, cause: BaseException):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        code = getattr(cause, "errno", None)
        if code == errno.EFBIG or (limit != resource.RLIM_INFINITY and isinstance(cause, RuntimeError)):
            why = f"file too large: this process may write files of at most {limit} bytes (ulimit -f)"
            fix = "raise or lift the file-size limit (ulimit -f unlimited, or your job scheduler's), and re-run"
        else:
            why = f"{type(cause).__name__}: {getattr(cause, 'strerror', None) or str(cause)[:160]}"
            fix = "check the disk and its folder, and re-run"
        super().__init__(
            code or errno.EIO,
            f"cannot write {final}: {why}. Nothing was written there; {fix}: finished outputs are kept.",
        )

    def __str__(self) -> str:  # the sentence alone, without OSError's "[Errno N]"
        return self.strerror


# torch.save reports a full disk as a RuntimeError from its zip writer ("unexpected pos",
# "file write failed"), not as ENOSPC; those are read as out-of-space only when the disk is nearly full.
_WRITE_FAILURES = ("unexpected pos", "file write failed", "write failed", "No space left")
_NEARLY_FULL_BYTES = 64 * 2**20


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    import shutil

    if isinstance(exc, (OutOfSpace, NotWritable)):
        return False
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, RuntimeError) and any(s in str(exc) for s in _WRITE_FAILURES):
        try:
            return shutil.disk_usage(folder).free < _NEARLY_FULL_BYTES
        except OSError:
            return False
    return False


def _write_failure(exc: BaseException, tmp: Path) -> bool:
    """Whether `exc`, raised inside an `atomic_path` block, is the temporary's write failing."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.EFBIG, errno.EIO) or exc.filename in (str(tmp), tmp)
    return any(failure in str(exc) for failure in _WRITE_FAILURES)


def _temp_prefix(final: Path) -> str:
    """How `atomic_path`'s temporaries beside `final` are named: `.<name>.<random><suffix>`."""
    return f".{final.name}."


def remove_stray_temporaries(final: str | os.PathLike) -> list[Path]:
    """Delete the temporaries `atomic_path` left beside `final` when its process was killed (SIGKILL,
    a power cut) before it could remove them; returns what was deleted. Only for a file that a single
    job writes (a training's checkpoint): another process's write in progress would look the same."""
    final = Path(final)
    strays = sorted(final.parent.glob(_temp_prefix(final) + "*")) if final.parent.is_dir() else []
    for stray in strays:
        stray.unlink(missing_ok=True)
    return strays


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    A crash or an exception leaves `final` untouched (or absent), so Snakemake never mistakes a
    half-written file for a finished one.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=_temp_prefix(final), suffix=suffix or final.suffix or ".tmp", dir=final.parent
        )
    except OSError as exc:
        # ENOTDIR: a file where a folder of the path should be
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR):
            raise NotWritable(final, exc) from exc
        if _out_of_space(exc, final.parent if final.parent.exists() else Path(".")):
            raise OutOfSpace(final, exc) from exc
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the final file the usual permissions (0666 minus the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, ArelboError):
            raise
        if _out_of_space(exc, final.parent):
            raise OutOfSpace(final, exc) from exc
        if _write_failure(exc, tmp_path):
            # the write of `final` failed (a file-size limit, an I/O error), not the work before it
            raise WriteFailed(final, exc) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Create `folder` and prove a file can be written there, before a job spends time computing
    what it would write (a read-only or foreign output folder is a NotWritable error up front)."""
    folder = Path(folder)
    with atomic_path(folder / ".arelbo-write-test") as tmp:
        tmp.write_bytes(b"")
    (folder / ".arelbo-write-test").unlink()
    return folder


def atomic_write_text(final: str | os.PathLike, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(final: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_torch_save(final: str | os.PathLike, obj) -> None:
    """torch.save `obj` to `final` atomically, in bytes that depend on `obj` alone. torch names the
    folder inside its zip archive after the file name it is given (here a random temporary's), but
    "archive" when given an open file: saved through one, equal objects give byte-identical files."""
    import torch

    with atomic_path(final) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
