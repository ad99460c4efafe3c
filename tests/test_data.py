"""Provisioning (checksums, sources, atomicity) and the in-memory datasets."""

from __future__ import annotations

import gzip
import hashlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from arelbo.core import layout
from arelbo.stages import data
from arelbo.stages.data import DataError
from arelbo.stages.provision import (
    CELEBA_SYNTHETIC_MARKER,
    MNIST_FILES,
    ChecksumError,
    ProvisionError,
    make_celeba_fixture,
    md5sum,
    provision_mnist,
)


def test_provisioned_mnist_has_the_canonical_md5(mnist_raw_dir):
    for name, expected in MNIST_FILES.items():
        assert md5sum(mnist_raw_dir / name) == expected


def test_local_copy_source_accepts_gz_and_verifies(tmp_path, mnist_raw_dir):
    local = tmp_path / "local"
    local.mkdir()
    for name in MNIST_FILES:
        with gzip.open(local / f"{name}.gz", "wb", compresslevel=1) as f:  # level 9: 17 s for the 55 MB
            f.write((mnist_raw_dir / name).read_bytes())
    dest = provision_mnist(tmp_path / "dest", local_copy=local, try_download=False)
    assert all(md5sum(dest / n) == MNIST_FILES[n] for n in MNIST_FILES)


def test_corrupt_local_copy_is_an_error_naming_the_file(tmp_path, mnist_raw_dir):
    local = tmp_path / "local"
    shutil.copytree(mnist_raw_dir, local)
    bad = local / "t10k-labels-idx1-ubyte"
    payload = bytearray(bad.read_bytes())
    payload[-1] ^= 0xFF
    bad.write_bytes(bytes(payload))
    with pytest.raises(ChecksumError) as info:
        provision_mnist(tmp_path / "dest", local_copy=local, try_download=False)
    assert "t10k-labels-idx1-ubyte" in str(info.value) and MNIST_FILES["t10k-labels-idx1-ubyte"] in str(info.value)
    assert not (tmp_path / "dest" / "t10k-labels-idx1-ubyte").exists()  # nothing half-verified is left


def test_corrupt_existing_file_is_detected(tmp_path, mnist_raw_dir):
    dest = tmp_path / "dest"
    shutil.copytree(mnist_raw_dir, dest)
    (dest / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01garbage")
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte"):
        provision_mnist(dest, try_download=False)


def test_no_source_is_a_clear_error(tmp_path):
    with pytest.raises(ProvisionError, match="local_copy"):
        provision_mnist(tmp_path / "dest", try_download=False)


def test_idx_parsing_and_mnist_splits(mnist_raw_dir):
    labels = data.read_idx(mnist_raw_dir / "train-labels-idx1-ubyte")
    assert labels.shape == (60000,) and set(np.unique(labels)) == set(range(10))
    splits = data.decode_mnist(mnist_raw_dir, val_size=5000)
    assert {k: v.shape for k, v in splits.items()} == {
        "train": (55000, 1, 28, 28),
        "val": (5000, 1, 28, 28),
        "test": (10000, 1, 28, 28),
    }
    full = data.read_idx(mnist_raw_dir / "train-images-idx3-ubyte")
    # validation is the *last* 5,000 training images
    np.testing.assert_array_equal(splits["val"][:, 0], full[-5000:])
    assert splits["train"].dtype == np.uint8 and splits["train"].max() == 255


def test_bad_idx_is_rejected(tmp_path):
    (tmp_path / "x").write_bytes(b"\x01\x02\x08\x01\0\0\0\x05abc")
    with pytest.raises(data.DataError, match="magic"):
        data.read_idx(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"\0\0\x08\x01\0\0\0\x05abc")
    with pytest.raises(data.DataError, match="payload"):
        data.read_idx(tmp_path / "y")


def test_load_split_is_uint8_from_cache_with_limits(ci_config):
    train = data.load_split("mnist", "train", ci_config)
    assert train.dtype == torch.uint8 and train.shape == (512, 1, 28, 28)
    full = data.load_split("mnist", "test", ci_config, limit=None)
    assert full.shape == (10000, 1, 28, 28)
    meta = layout.dataset_cache_meta(ci_config.resources, "mnist")
    stamp = meta.stat().st_mtime_ns
    data.load_split("mnist", "val", ci_config)
    assert meta.stat().st_mtime_ns == stamp  # the cache is reused, not rebuilt
    x = data.to_float(train[:4])
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0


def test_celeba_fixture_has_torchvision_layout(tmp_path):
    root = make_celeba_fixture(tmp_path / "celeba", n=10, seed=3)
    images = sorted((root / "img_align_celeba").glob("*.jpg"))
    assert [p.name for p in images] == [f"{i:06d}.jpg" for i in range(1, 11)]
    with Image.open(images[0]) as img:
        assert img.size == (178, 218) and img.mode == "RGB"
    partition = data.read_celeba_partition(root)
    assert sum(len(v) for v in partition.values()) == 10 and all(partition.values())
    assert (root / CELEBA_SYNTHETIC_MARKER).is_file()
    # same seed → same bytes; torchvision's root/celeba nesting is found too
    again = make_celeba_fixture(tmp_path / "nested" / "celeba", n=10, seed=3)
    assert (
        hashlib.md5(images[4].read_bytes()).hexdigest()
        == hashlib.md5((again / "img_align_celeba" / "000005.jpg").read_bytes()).hexdigest()
    )
    assert layout.celeba_folder(tmp_path / "nested") == again


def test_celeba_preprocessing_crops_the_centre_then_resizes(tmp_path):
    # A 178×218 image whose central 140×140 square is white and the rest black:
    # after the design's crop (docs/design.md §1) (left 19, top 39) the 64×64 result must be all white.
    canvas = np.zeros((218, 178, 3), np.uint8)
    canvas[39:179, 19:159] = 255
    Image.fromarray(canvas).save(tmp_path / "a.png")
    out = data.celeba_preprocess(tmp_path / "a.png")
    assert out.shape == (3, 64, 64) and out.dtype == np.uint8
    assert out.min() == 255
    # one pixel column further out is black and must not leak into the crop
    canvas[39:179, 18] = 0
    canvas[39:179, 19] = 0
    Image.fromarray(canvas).save(tmp_path / "b.png")
    assert data.celeba_preprocess(tmp_path / "b.png")[:, :, 0].mean() < 255


def test_celeba_cache_splits_follow_the_partition_file(ci_config):
    splits = {s: data.load_split("celeba", s, ci_config, limit=None) for s in ("train", "val", "test")}
    partition = data.read_celeba_partition(layout.celeba_folder(ci_config.data.celeba.root))
    for split, names in partition.items():
        assert splits[split].shape == (len(names), 3, 64, 64)
    first = partition["test"][0]
    expected = data.celeba_preprocess(layout.celeba_folder(ci_config.data.celeba.root) / "img_align_celeba" / first)
    np.testing.assert_array_equal(splits["test"][0].numpy(), expected)


def test_missing_celeba_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="CelebA not found.*img_align_celeba"):
        data.decode_celeba(tmp_path)


def test_bad_partition_line_names_the_line(tmp_path):
    root = make_celeba_fixture(tmp_path / "c", n=4)
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg seven\n")
    with pytest.raises(data.DataError, match="line 2"):
        data.read_celeba_partition(root)


# --------------------------------------------------------------------------------------------
# inputs verified where they are used: raw MNIST checksums, incomplete caches, changed CelebA
# --------------------------------------------------------------------------------------------


def _config_with_resources(tmp_path, mnist_raw_dir, **data):
    import shutil

    from arelbo.core.config import load_config

    raw = tmp_path / "resources" / "mnist" / "raw"
    raw.mkdir(parents=True)
    for f in mnist_raw_dir.iterdir():
        shutil.copy(f, raw / f.name)
    return load_config(
        "config/ci.yaml",
        check_folders=False,
        overrides={"resources": str(tmp_path / "resources"), "datasets": ["mnist"], **data},
    ), raw


def test_a_corrupt_raw_mnist_file_is_refused_before_decoding(tmp_path, mnist_raw_dir):
    import subprocess
    import sys

    import yaml

    from arelbo.stages.data import prepare_dataset

    cfg, raw = _config_with_resources(tmp_path, mnist_raw_dir)
    target = raw / "train-images-idx3-ubyte"
    data = bytearray(target.read_bytes())
    data[100_000] ^= 0xFF  # one flipped byte in an image
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match="train-images-idx3-ubyte is corrupt.*arelbo provision mnist"):
        prepare_dataset("mnist", cfg)
    assert not (tmp_path / "resources" / "datasets").exists()  # nothing decoded from it
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"resources": str(tmp_path / "resources"), "datasets": ["mnist"]}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "arelbo",
            "provision",
            "data",
            "--dataset",
            "mnist",
            "--config",
            "config/ci.yaml",
            "--config",
            str(overlay),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "is corrupt" in result.stderr and "Traceback" not in result.stderr


def test_a_partly_deleted_or_truncated_cache_is_rebuilt(tmp_path, mnist_raw_dir):
    from arelbo.core import layout
    from arelbo.stages.data import load_split, prepare_dataset

    cfg, _ = _config_with_resources(tmp_path, mnist_raw_dir)
    meta = prepare_dataset("mnist", cfg)
    expected = load_split("mnist", "val", cfg)
    (meta.parent / "val.npy").unlink()  # meta.json still says the cache is there
    assert torch.equal(load_split("mnist", "val", cfg), expected)
    test_file = meta.parent / "test.npy"
    test_file.write_bytes(test_file.read_bytes()[:5000])  # truncated
    assert load_split("mnist", "test", cfg).shape == (128, 1, 28, 28)
    assert meta == layout.dataset_cache_meta(cfg.resources, "mnist")


def test_celeba_cache_is_rebuilt_when_an_image_changes(tmp_path):
    from arelbo.core.config import load_config
    from arelbo.stages.data import load_split

    root = make_celeba_fixture(tmp_path / "celeba", n=10, seed=3)
    cfg = load_config(
        "config/ci.yaml",
        check_folders=False,
        overrides={
            "resources": str(tmp_path / "resources"),
            "datasets": ["celeba"],
            "data": {"celeba": {"root": str(root), "synthetic_standin": None, "limit": {"train": None, "val": None}}},
        },
    )
    before = load_split("celeba", "train", cfg)
    from arelbo.stages.data import read_celeba_partition

    first = sorted(read_celeba_partition(root)["train"])[0]
    other = make_celeba_fixture(tmp_path / "other", n=10, seed=4)
    (root / "img_align_celeba" / first).write_bytes((other / "img_align_celeba" / first).read_bytes())
    after = load_split("celeba", "train", cfg)
    assert not torch.equal(before[0], after[0]) and torch.equal(before[1:], after[1:])
