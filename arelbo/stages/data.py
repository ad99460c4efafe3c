"""Datasets as in-memory uint8 tensors (N×C×H×W) with train/val/test splits.

Raw sources are decoded once into `.npy` caches under `resources/datasets/{dataset}/`; training
and evaluation read those (memory-mapped) and never decode a JPEG per epoch.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from arelbo.core.errors import ArelboError
from arelbo.core.layout import SPLITS, celeba_folder, dataset_cache_dir, dataset_cache_meta, mnist_raw_dir
from arelbo.core.runtime import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
CELEBA_CROP = 140
CELEBA_SIZE = 64
CELEBA_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
# Images in each split of the official partitions: CelebA's list_eval_partition.txt; MNIST's training
# set (60,000, the validation split included: its last data.mnist.val_size images) and test set.
OFFICIAL_SPLIT_SIZES = {
    "mnist": {"train": 60000, "test": 10000},
    "celeba": {"train": 162770, "val": 19867, "test": 19962},
}


class DataError(ArelboError, RuntimeError):
    pass


# ---------------------------------------------------------------------------- MNIST


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST container format: magic, dims, big-endian payload)."""
    data = Path(path).read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise DataError(f"{path}: unknown IDX element type 0x{dtype_code:02x}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    array = np.frombuffer(data, dtype=dtypes[dtype_code], offset=offset)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{path}: payload has {array.size} elements, header says {shape}")
    return array.reshape(shape).astype(dtypes[dtype_code].replace(">", "="))


def decode_mnist(raw_dir: Path, val_size: int) -> dict[str, np.ndarray]:
    raw_dir = Path(raw_dir)
    missing = [n for n in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte") if not (raw_dir / n).is_file()]
    if missing:
        raise DataError(f"MNIST files {missing} are missing from {raw_dir}; run `arelbo provision mnist` first")
    train = read_idx(raw_dir / "train-images-idx3-ubyte")[:, None]
    test = read_idx(raw_dir / "t10k-images-idx3-ubyte")[:, None]
    if not 0 < val_size < len(train):
        raise DataError(f"data.mnist.val_size={val_size} must be between 1 and {len(train) - 1}")
    # Validation = the last val_size images of the official training set (docs/design.md §1).
    return {"train": train[:-val_size], "val": train[-val_size:], "test": test}


# ---------------------------------------------------------------------------- CelebA


def celeba_preprocess(path: Path) -> np.ndarray:
    """docs/design.md §1: centre crop 140×140, resize to 64×64 with PIL bilinear (antialiased), CHW uint8."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        left, top = round((w - CELEBA_CROP) / 2), round((h - CELEBA_CROP) / 2)
        img = img.crop((left, top, left + CELEBA_CROP, top + CELEBA_CROP))
        img = img.resize((CELEBA_SIZE, CELEBA_SIZE), Image.BILINEAR, reducing_gap=None)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def read_celeba_partition(folder: Path) -> dict[str, list[str]]:
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    names = {v: k for k, v in CELEBA_SPLIT_IDS.items()}
    for lineno, line in enumerate((folder / "list_eval_partition.txt").read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in names:
            raise DataError(
                f"{folder / 'list_eval_partition.txt'} line {lineno}: expected '<file>.jpg <0|1|2>', got {line!r}"
            )
        splits[names[int(parts[1])]].append(parts[0])
    for split in splits:
        splits[split].sort()  # sorted file names (docs/design.md §1)
    return splits


def decode_celeba(root: Path, workers: int = 2) -> dict[str, np.ndarray]:
    from tqdm import tqdm

    folder = celeba_folder(root)
    if folder is None:
        raise DataError(
            f"CelebA not found at {root}: expected img_align_celeba/*.jpg and list_eval_partition.txt there "
            "(or under celeba/). Download them from the CelebA site and set data.celeba.root, or use "
            "`arelbo fixture celeba DIR` for a synthetic stand-in."
        )
    out = {}
    for split, names in read_celeba_partition(folder).items():
        paths = [folder / "img_align_celeba" / n for n in names]
        absent = [p for p in paths[:1000] if not p.is_file()]
        if absent:
            raise DataError(f"CelebA image {absent[0]} listed in list_eval_partition.txt is missing")
        images = np.empty((len(paths), 3, CELEBA_SIZE, CELEBA_SIZE), dtype=np.uint8)
        with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(celeba_preprocess, paths, chunksize=256)
            for i, img in enumerate(tqdm(results, total=len(paths), desc=f"decode celeba/{split}", unit="img")):
                images[i] = img
        out[split] = images
    return out


# ---------------------------------------------------------------------------- cache


def verified_mnist_raw(raw_dir: Path) -> dict[str, str]:
    """MD5 of the four raw MNIST files, each checked against its canonical value (docs/design.md §1) where it
    is used: a corrupted or replaced file is refused with its name and the fix."""
    from arelbo.stages.provision import MNIST_FILES, md5sum

    digests = {}
    for name, expected in MNIST_FILES.items():
        path = Path(raw_dir) / name
        if not path.is_file():
            raise DataError(f"MNIST file {path} is missing; run `arelbo provision mnist` first")
        digest = md5sum(path)
        if digest != expected:
            raise DataError(
                f"MNIST file {path} is corrupt: MD5 {digest}, expected {expected}. Delete it and run "
                "`arelbo provision mnist` to fetch a verified copy."
            )
        digests[name] = digest
    return digests


def celeba_listing_digest(folder: Path) -> str:
    """A digest of CelebA's partition file and the name, size and mtime of every image it lists:
    a changed, added or replaced image changes it (stat() calls only: no image is read)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    partition = (folder / "list_eval_partition.txt").read_bytes()
    h.update(partition)
    for line in partition.decode().split("\n"):
        name = line.split()[0] if line.strip() else None
        if name:
            try:
                st = (folder / "img_align_celeba" / name).stat()
                h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            except FileNotFoundError:
                h.update(f"{name}:missing\n".encode())
    return h.hexdigest()


def _source_key(dataset: str, cfg) -> dict:
    """What a dataset cache was decoded from, checksums included: the cache is rebuilt when it changes."""
    if dataset == "mnist":
        return {
            "dataset": "mnist",
            "val_size": cfg.data.mnist.val_size,
            "format": CACHE_FORMAT,
            "raw_md5": verified_mnist_raw(mnist_raw_dir(Path(cfg.resources))),
        }
    if dataset == "celeba":
        root = cfg.data.celeba.root
        folder = celeba_folder(root) if root else None
        return {
            "dataset": "celeba",
            "root": str(Path(root).resolve()) if root else None,
            "crop": CELEBA_CROP,
            "size": CELEBA_SIZE,
            "format": CACHE_FORMAT,
            "listing": celeba_listing_digest(folder) if folder is not None else None,
        }
    raise DataError(f"unknown dataset {dataset!r}")


def _cache_complete(meta_path: Path, meta: dict) -> bool:
    """Every split file is there with the shape meta.json recorded (a partly deleted or truncated
    cache is rebuilt, not read)."""
    for split in SPLITS:
        path = meta_path.parent / f"{split}.npy"
        if not path.is_file():
            return False
        try:
            shape = list(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        except (ValueError, OSError):
            return False
        if shape != meta.get("shapes", {}).get(split):
            return False
    return True


def prepare_dataset(dataset: str, cfg, workers: int = 2) -> Path:
    """Decode `dataset` once into resources/datasets/{dataset}/ (idempotent; rebuilt if the source changed)."""
    resources = Path(cfg.resources)
    tag = cfg.dataset_tag(dataset)
    meta_path = dataset_cache_meta(resources, tag)
    key = _source_key(dataset, cfg)
    if meta_path.is_file():
        meta = _read_meta(meta_path)
        if meta.get("source") == key and _cache_complete(meta_path, meta):
            return meta_path
        log.info("dataset cache %s is incomplete or was built from another source; rebuilding", meta_path.parent)
    if dataset == "mnist":
        splits = decode_mnist(mnist_raw_dir(resources), cfg.data.mnist.val_size)
    else:
        splits = decode_celeba(Path(cfg.data.celeba.root), workers=workers)
    cache = dataset_cache_dir(resources, tag)
    cache.mkdir(parents=True, exist_ok=True)
    if meta_path.exists():
        meta_path.unlink()  # the meta file is the completion marker: drop it first
    for split, images in splits.items():
        with atomic_path(cache / f"{split}.npy") as tmp:
            np.save(tmp, images)
    meta = {"source": key, "shapes": {s: list(a.shape) for s, a in splits.items()}}
    atomic_write_text(meta_path, json.dumps(meta, indent=2))
    return meta_path


def _read_meta(meta_path: Path) -> dict:
    try:
        return json.loads(meta_path.read_text())
    except (ValueError, OSError):
        return {}  # unreadable: treated as absent, so the cache is rebuilt


def load_split(dataset: str, split: str, cfg, limit: int | None | str = "config"):
    """uint8 torch tensor N×C×H×W of one split, from the cache (built on first use).

    `limit="config"` applies the config's data.{dataset}.limit.{split}; an int or None overrides it.
    """
    import torch

    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {SPLITS}")
    meta = dataset_cache_meta(cfg.resources, cfg.dataset_tag(dataset))
    recorded = _read_meta(meta) if meta.is_file() else {}
    if recorded.get("source") != _source_key(dataset, cfg) or not _cache_complete(meta, recorded):
        prepare_dataset(dataset, cfg)
    array = np.load(meta.parent / f"{split}.npy", mmap_mode="r", allow_pickle=False)
    if limit == "config":
        limit = getattr(getattr(cfg.data, dataset).limit, split)
    if limit is not None:
        array = array[:limit]
    return torch.from_numpy(np.array(array))  # a private, writable copy of the memory map


def mnist_labels(split: str, cfg, limit: int | None | str = "config") -> np.ndarray:
    """Digit labels (uint8) aligned with `load_split("mnist", split, cfg, limit)` — for figures only."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {SPLITS}")
    raw = mnist_raw_dir(Path(cfg.resources))
    name = "t10k-labels-idx1-ubyte" if split == "test" else "train-labels-idx1-ubyte"
    if not (raw / name).is_file():
        raise DataError(f"MNIST file {name} is missing from {raw}; run `arelbo provision mnist` first")
    labels = read_idx(raw / name)
    val_size = cfg.data.mnist.val_size
    labels = {"train": labels[:-val_size], "val": labels[-val_size:], "test": labels}[split]
    if limit == "config":
        limit = getattr(cfg.data.mnist.limit, split)
    return labels[:limit] if limit is not None else labels


def to_float(images):
    """uint8 → float32 in [0, 1] (docs/design.md §0: all images are floats in [0, 1])."""
    return images.float().div_(255.0)
