"""Evaluation stages after training: encode → fit estimators → sample → metrics → tidy records.

Each function is one Snakemake job's work: it reads files, writes one output atomically.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from .runtime import atomic_path, atomic_write_text, device_info, pick_device

INTERPOLATION_SAMPLERS = ("interp_mid", "interp_random")
# Each estimator draws from its own stream: seed = 1000·(config seed) + offset. The two interpolation
# samplers share one stream on purpose: the same test pairs (interpolation_latents draws the pairs
# first, then t for "random"), so Table 4's two columns differ only in t.
SAMPLER_SEED_OFFSET = {"prior": 1, "2ndvae": 2, "gmm10": 3, "gmm100": 4, "interp_mid": 5, "interp_random": 5}
DECODE_BATCH = 500


def sampler_seed(seed: int, sampler: str) -> int:
    return 1000 * int(seed) + SAMPLER_SEED_OFFSET[sampler]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@torch.inference_mode()
def encode_split(net, images: torch.Tensor, device, batch_size: int = DECODE_BATCH):
    """Encoder outputs (mu, logvar or None) of uint8 images, in batches, in eval mode."""
    mus, logvars = [], []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float().div_(255.0)
        mu, logvar = net.encode(x)
        mus.append(mu.float().cpu())
        if logvar is not None:
            logvars.append(logvar.float().cpu())
    return torch.cat(mus), (torch.cat(logvars) if logvars else None)


def encode(cfg, dataset: str, model_file: Path, out: Path) -> Path:
    """latents.npz: train_mu, train_logvar (stochastic models), test_mu."""
    from .data import load_split
    from .train import load_trained

    device = pick_device(cfg.device)
    net, _ = load_trained(model_file, device)
    arrays = {}
    for split in ("train", "test"):
        mu, logvar = encode_split(net, load_split(dataset, split, cfg), device)
        arrays[f"{split}_mu"] = mu.numpy()
        if logvar is not None:
            arrays[f"{split}_logvar"] = logvar.numpy()
    with atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return out


def fit(cfg, estimator_id: str, latents: Path, seed: int, out: Path) -> Path:
    from .estimators import SecondStageSettings, fit_estimator, save_estimator

    data = np.load(latents)
    mu = torch.from_numpy(data["train_mu"])
    logvar = torch.from_numpy(data["train_logvar"]) if "train_logvar" in data else None
    settings = SecondStageSettings(**(cfg.raw.get("second_stage") or {}))
    est = fit_estimator(estimator_id, mu, logvar, seed=seed, second_stage=settings,
                        device=pick_device(cfg.device), progress=False)
    save_estimator(est, out)
    return out


@torch.inference_mode()
def decode_to_uint8(net, z: torch.Tensor, device, batch_size: int = DECODE_BATCH) -> np.ndarray:
    """Decoder means μθ(z), clamped to [0, 1] and quantised like a PNG writer (SPEC §2)."""
    chunks = []
    for start in range(0, len(z), batch_size):
        x_mean, _ = net.decode(z[start:start + batch_size].to(device))
        chunks.append(x_mean.float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu())
    return torch.cat(chunks).numpy()


def image_grid(images: np.ndarray, nrow: int = 8, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 N×C×H×W images into one H'×W'×C array, laid out exactly like torchvision's
    `make_grid` (a test holds the two equal). Written in numpy because importing torchvision costs
    ~2 s per process (torchvision.ops pulls in torch._dynamo) and every sample job writes a grid."""
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, np.uint8)
    for i, image in enumerate(images):
        top, left = (i // cols) * (h + padding) + padding, (i % cols) * (w + padding) + padding
        grid[top:top + h, left:left + w] = image.transpose(1, 2, 0)
    return grid


def save_grid(images: np.ndarray, path: Path, n: int = 64) -> None:
    from PIL import Image

    grid = image_grid(images[:n])
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid).save(tmp, format="PNG")


def sample(cfg, dataset: str, model_file: Path, sampler: str, seed: int, out: Path, *,
           estimator_file: Path | None = None, latents: Path | None = None) -> Path:
    """samples .npz (uint8 N×C×H×W, key `images`) and a PNG grid of the first 64 beside it."""
    from .estimators import load_estimator
    from .metrics.interpolation import interpolation_latents
    from .train import load_trained

    device = pick_device(cfg.device)
    net, _ = load_trained(model_file, device)
    n, stream = cfg.fid.n_samples, sampler_seed(seed, sampler)
    extra = {}
    if sampler in INTERPOLATION_SAMPLERS:
        mu_test = torch.from_numpy(np.load(latents)["test_mu"])
        interp = interpolation_latents(mu_test, n, sampler.removeprefix("interp_"), stream)
        z, extra = interp.latents, {"pairs": interp.pairs.numpy(), "t": np.asarray(interp.t)}
    else:
        z = load_estimator(estimator_file).sample(n, stream)
    images = decode_to_uint8(net, z.float(), device)
    with atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=images, **extra)
    save_grid(images, out.with_suffix(".png"))
    return out


def _write_metric(out: Path, cfg, dataset, model, seed, metric, value, *, device, **extra) -> None:
    # device, its name, torch and CUDA versions: which machine computed a number is never a guess
    record = {"table": 4 if metric.startswith("fid_interp") else 3, "dataset": dataset, "model": model,
              "seed": int(seed), "metric": metric, "value": float(value), "config": cfg.name,
              "commit": git_commit(), **extra, **device_info(device)}
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")


@torch.inference_mode()
def mse(cfg, dataset: str, model: str, model_file: Path, seed: int, out: Path) -> Path:
    """Test-set ‖x − μθ(μφ(x))‖² per image (no sampling), mean over the split (SPEC §6)."""
    from .data import load_split
    from .train import load_trained

    device = pick_device(cfg.device)
    net, _ = load_trained(model_file, device)
    images = load_split(dataset, "test", cfg)
    total = 0.0
    for start in range(0, len(images), DECODE_BATCH):
        x = images[start:start + DECODE_BATCH].to(device).float().div_(255.0)
        mu, _ = net.encode(x)
        x_mean, _ = net.decode(mu)
        total += float((x - x_mean).pow(2).flatten(1).sum(1).double().sum())
    _write_metric(out, cfg, dataset, model, seed, "mse", total / len(images), n=len(images),
                  device=device)
    return out


def expected_reference_count(cfg, dataset: str) -> int:
    """The n a dataset's FID reference statistics must have under this config."""
    from .layout import dataset_cache_meta

    count = cfg.fid_reference_count(dataset)
    if count is not None:
        return int(count)
    meta = dataset_cache_meta(cfg.resources, cfg.dataset_tag(dataset))
    return int(json.loads(meta.read_text())["shapes"][cfg.fid.reference_split][0])


def fid(cfg, dataset: str, model: str, seed: int, sampler: str, samples: Path, reference: Path,
        weights: Path, out: Path) -> Path:
    from .inception_weights import build_inception
    from .metrics.fid import fid_against

    ref = np.load(reference)
    expected = expected_reference_count(cfg, dataset)
    if int(ref["n"]) != expected:
        from .data import DataError

        raise DataError(f"{reference} holds statistics of {int(ref['n'])} reference images, but config "
                         f"{cfg.name!r} asks for {expected}; delete the file and re-run to recompute it")
    images = np.load(samples)["images"]
    device = pick_device(cfg.device)
    inception = build_inception(weights).to(device)
    value = fid_against(images, {"mu": ref["mu"], "sigma": ref["sigma"]}, inception,
                        batch_size=cfg.fid.batch_size, device=device, progress=False)
    _write_metric(out, cfg, dataset, model, seed, f"fid_{sampler}", value, n_samples=len(images),
                  n_reference=int(ref["n"]), device=device)
    return out


def assemble_table(cfg, table: int, metric_files: list[Path], outdir: Path) -> dict:
    from .tables import tidy_from_records, write_table_outputs

    records = []
    for path in metric_files:   # one record per file (Tables 3, 4) or a list (a Section 3 grid point)
        data = json.loads(Path(path).read_text())
        records += data if isinstance(data, list) else [data]
    tidy = tidy_from_records(records)
    return write_table_outputs(tidy, table, outdir, config_name=cfg.name, reduced=cfg.reduced,
                               synthetic_datasets=cfg.synthetic_datasets)
