"""Evaluation stages after training: encode → fit estimators → sample → metrics → tidy records.

Each function is one Snakemake job's work: it reads files, writes one output atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from arelbo.core.provenance import git_commit  # noqa: F401  (re-exported: older imports)
from arelbo.core.registry import INTERPOLATION_SAMPLERS
from arelbo.core.runtime import atomic_path, atomic_write_text, pick_device

DECODE_BATCH = 500
# What an intermediate file of a results folder (latents, samples) that cannot be read needs: the job
# that wrote it runs again.
REBUILD = "delete it and re-run to rebuild it"
# ... and an FID reference in resources/: the fid-reference job (arelbo fid-reference) computes it again.
REBUILD_REFERENCE = "delete it and re-run (the fid-reference job computes it again)"


def sampler_seed(seed: int, sampler: str) -> int:
    """The seed of a sampler's draws: 1000·(run seed) + its offset (registry.sampler_seed_offset)."""
    from arelbo.core.registry import sampler_seed_offset

    return 1000 * int(seed) + sampler_seed_offset(sampler)


@torch.inference_mode()
def encode_split(net, images: torch.Tensor, device, batch_size: int = DECODE_BATCH):
    """Encoder outputs (mu, logvar or None) of uint8 images, in batches, in eval mode."""
    mus, logvars = [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255.0)
        mu, logvar = net.encode(x)
        mus.append(mu.float().cpu())
        if logvar is not None:
            logvars.append(logvar.float().cpu())
    return torch.cat(mus), (torch.cat(logvars) if logvars else None)


def encode(cfg, dataset: str, model_file: Path, out: Path) -> Path:
    """latents.npz: train_mu, train_logvar (stochastic models), test_mu."""
    from arelbo.stages.data import load_split
    from arelbo.stages.train import load_trained

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


def _training_latents(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    from arelbo.core.safeload import load_npz

    data = load_npz(path, REBUILD)
    return (
        torch.from_numpy(data["train_mu"]),
        torch.from_numpy(data["train_logvar"]) if "train_logvar" in data else None,
    )


def fit_and_save(cfg, estimator_id: str, latents: Path, seed: int, out: Path) -> Path:
    from arelbo.models.estimators import fit_estimator, save_estimator

    mu, logvar = _training_latents(latents)
    est = fit_estimator(
        estimator_id,
        mu,
        logvar,
        seed=seed,
        settings=cfg.estimator_settings(estimator_id),
        device=pick_device(cfg.device),
        progress=False,
    )
    save_estimator(est, out)
    return out


def fit_and_save_second_stages(cfg, latents: list[Path], seed: int, outs: list[Path]) -> list[Path]:
    """second_stage.batched: the second-stage VAEs of several models' latents (one dataset, one seed)
    fitted as one vectorised training; outs[k] is what `fit(cfg, "2ndvae", latents[k], seed, outs[k])`
    writes, to float tolerance."""
    from arelbo.models.estimators import fit_second_stages as fit_all
    from arelbo.models.estimators import save_estimator

    if len(latents) != len(outs) or not latents:
        raise ValueError(f"one output per latents file: got {len(latents)} latents and {len(outs)} outputs")
    names = [Path(p).parent.parent.name for p in latents]  # <outdir>/models/<dataset>/<model>/seed<s>/latents.npz
    fitted = fit_all(
        [_training_latents(p) for p in latents],
        seed=seed,
        settings=cfg.second_stage.settings,
        device=pick_device(cfg.device),
        progress=False,
        names=names,
    )
    for est, out in zip(fitted, outs):
        save_estimator(est, out)
    return outs


@torch.inference_mode()
def decode_to_uint8(net, z: torch.Tensor, device, batch_size: int = DECODE_BATCH) -> np.ndarray:
    """Decoder means μθ(z), clamped to [0, 1] and quantised like a PNG writer (docs/design.md §2)."""
    chunks = []
    for start in range(0, len(z), batch_size):
        x_mean, _ = net.decode(z[start : start + batch_size].to(device))
        chunks.append(x_mean.float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu())
    return torch.cat(chunks).numpy()


def image_grid(images: np.ndarray, nrow: int = 8, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 N×C×H×W images into one H'×W'×C array, laid out exactly like torchvision's
    `make_grid` (a test holds the two equal). Written in numpy because importing torchvision costs
    seconds per process (torchvision.ops pulls in torch._dynamo) and every sample job writes a grid."""
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, np.uint8)
    for i, image in enumerate(images):
        top, left = (i // cols) * (h + padding) + padding, (i % cols) * (w + padding) + padding
        grid[top : top + h, left : left + w] = image.transpose(1, 2, 0)
    return grid


def save_grid(images: np.ndarray, path: Path, n: int = 64) -> None:
    from PIL import Image

    grid = image_grid(images[:n])
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid).save(tmp, format="PNG")


def sample(
    cfg,
    dataset: str,
    model_file: Path,
    sampler: str,
    seed: int,
    out: Path,
    *,
    estimator_file: Path | None = None,
    latents: Path | None = None,
) -> Path:
    """samples .npz (uint8 N×C×H×W, key `images`) and a PNG grid of the first 64 beside it."""
    from arelbo.metrics.interpolation import interpolation_latents
    from arelbo.models.estimators import load_estimator
    from arelbo.stages.train import load_trained

    device = pick_device(cfg.device)
    net, _ = load_trained(model_file, device)
    n, stream = cfg.fid.n_samples, sampler_seed(seed, sampler)
    extra = {}
    if sampler in INTERPOLATION_SAMPLERS:
        from arelbo.core.safeload import load_npz

        mu_test = torch.from_numpy(load_npz(latents, REBUILD)["test_mu"])
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


def _record(cfg, dataset, model, seed, metric, value, *, provenance: dict, uncertainty=float("nan"), **extra) -> dict:
    """One tidy record: the cell's keys, its value, the value's within-run uncertainty (a standard
    deviation: FID delta method or bootstrap, KID subsets, standard error over images; NaN when
    unknown), the sizes it was measured on, whether the model had converged (its training log,
    arelbo.models.convergence), the torch thread count its training ran with (`train_threads`, from
    its log; the record's own count is the provenance's `threads`) and its provenance
    (arelbo.core.provenance)."""
    from arelbo.core import layout
    from arelbo.models.convergence import diagnose_log
    from arelbo.stages.train import training_threads

    table = 4 if metric.startswith(("fid_interp", "kid_interp")) else 3
    train_log = layout.train_log(cfg.outdir, dataset, model, seed)
    diagnosis = diagnose_log(train_log)
    convergence = diagnosis.record_fields() if diagnosis is not None else {}
    second = _estimator_convergence(cfg, dataset, model, seed, metric)
    if second is not None:  # a sampler whose estimator is itself a training (the 2nd VAE)
        from arelbo.models.convergence import with_second_stage

        convergence = with_second_stage(convergence, second)
    return {
        "table": table,
        "dataset": dataset,
        "model": model,
        "seed": int(seed),
        "metric": metric,
        "value": float(value),
        "uncertainty": float(uncertainty),
        "config": cfg.name,
        "reduced": bool(cfg.reduced),
        "reduced_because": "; ".join(cfg.reduced_because),
        **convergence,  # the trained model's (and its second stage's, for the 2nd-VAE sampler)
        "train_threads": training_threads(train_log),
        **extra,
        **provenance,
    }


def _estimator_convergence(cfg, dataset, model, seed, metric: str):
    """The convergence of the estimator a sampler's FID/KID rests on, when that estimator was itself
    trained epoch by epoch (its file's `fit_log` has a `loss` per epoch: the 2nd VAE); None for
    other metrics, closed-form or EM estimators (prior, GMMs) and interpolations."""
    from arelbo.core import layout
    from arelbo.core.safeload import load_torch
    from arelbo.models.convergence import diagnose_second_stage

    kind, _, sampler = metric.partition("_")
    if kind not in ("fid", "kid") or not sampler or sampler.startswith("interp"):
        return None
    path = layout.estimator_path(cfg.outdir, dataset, model, seed, sampler)
    if not path.is_file():
        return None
    fit_log = load_torch(path, fix=REBUILD).get("fit_log") or []
    if not fit_log or "loss" not in fit_log[0]:
        return None
    return diagnose_second_stage(fit_log)


def _write_records(out: Path, records: list[dict]) -> None:
    # a metric file holds a list of records, as a Section 3 criteria file does
    atomic_write_text(out, json.dumps(records, indent=2) + "\n")


@torch.inference_mode()
def mse(cfg, dataset: str, model: str, model_file: Path, seed: int, out: Path) -> Path:
    """Test-set ‖x − μθ(μφ(x))‖² per image (no sampling), mean over the split (docs/design.md §6), with its
    standard error over the images. For the models whose objective estimates Σx (the trainable-Σx
    twins and AR-ELBO), also `sigma_x2`: the σx² the objective implies on the test set, averaged as
    its training log does (Iso-I AR-ELBO: the MLE MSE/d the paper reports as 0.0056 on MNIST)."""
    from arelbo.core.provenance import provenance
    from arelbo.models.objectives import MODELS, loss_and_terms
    from arelbo.stages.data import load_split
    from arelbo.stages.train import load_trained, model_hparams

    device = pick_device(cfg.device)
    net, _ = load_trained(model_file, device)
    images = load_split(dataset, "test", cfg)
    hparams = model_hparams(cfg, model, dataset)
    errors, sigma_x2, weights = [], [], []
    # The objective draws one reparameterised sample from the global generators: seed them for this job
    # and give the caller's back afterwards, the device's (CUDA) as well as the CPU's.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(sampler_seed(seed, "prior") + 100)
        for start in range(0, len(images), DECODE_BATCH):
            x = images[start : start + DECODE_BATCH].to(device).float().div_(255.0)
            mu, _ = net.encode(x)
            x_mean, _ = net.decode(mu)
            errors.append((x - x_mean).pow(2).flatten(1).sum(1).double().cpu())
            if MODELS[model].estimates_sigma_x:
                _, terms = loss_and_terms(model, dataset, net, x, hparams)
                sigma_x2.append(float(terms["sigma_x2"]))
                weights.append(len(x))
    errors = torch.cat(errors)
    n = len(images)
    prov = provenance(cfg, dataset, device)
    records = [
        _record(
            cfg,
            dataset,
            model,
            seed,
            "mse",
            float(errors.mean()),
            provenance=prov,
            n_images=n,
            uncertainty=float(errors.std() / n**0.5) if n > 1 else float("nan"),
        )
    ]
    if sigma_x2:
        values = np.asarray(sigma_x2)
        w = np.asarray(weights, dtype=float) / sum(weights)
        # standard error of the weighted mean of the minibatch estimates (unknown from one minibatch)
        spread = (
            float(np.sqrt(np.sum(w * (values - np.sum(w * values)) ** 2) / (len(values) - 1)))
            if len(values) > 1
            else float("nan")
        )
        records.append(
            _record(
                cfg,
                dataset,
                model,
                seed,
                "sigma_x2",
                float(np.sum(w * values)),
                provenance=prov,
                n_images=n,
                uncertainty=spread,
            )
        )
    _write_records(out, records)
    return out


def expected_reference_count(cfg, dataset: str) -> int:
    """The n a dataset's FID reference statistics must have under this config."""
    from arelbo.core.layout import dataset_cache_meta

    count = cfg.fid_reference_count(dataset)
    if count is not None:
        return int(count)
    meta = dataset_cache_meta(cfg.resources, cfg.dataset_tag(dataset))
    return int(json.loads(meta.read_text())["shapes"][cfg.fid.reference_split][0])


def fid_with_uncertainty(fid_cfg, features: np.ndarray, stats: dict, stream: int, device) -> tuple[float, float, str]:
    """(FID, its within-run standard error, how that was estimated) as `fid.uncertainty` says
    (docs/design.md, "FID's uncertainty"); the bootstrap resamples are drawn from `stream`."""
    from arelbo.metrics.fid import fid_bootstrap, frechet_distance_and_standard_error, frechet_distance_to_features

    if fid_cfg.uncertainty == "delta":
        value, spread = frechet_distance_and_standard_error(features, stats, device=device)
        return value, spread, "delta method (influence function of the generated features' mean and covariance)"
    value = frechet_distance_to_features(features, stats, device=device)
    if fid_cfg.uncertainty == "bootstrap":
        boots = fid_bootstrap(features, stats, resamples=fid_cfg.bootstrap_resamples, seed=stream, device=device)
        return value, float(np.std(boots, ddof=1)), f"bootstrap over generated images ({len(boots)} resamples)"
    return value, float("nan"), "none (fid.uncertainty: none)"


def fid(
    cfg,
    dataset: str,
    model: str,
    seed: int,
    sampler: str,
    samples: Path,
    reference: Path,
    weights: Path,
    out: Path,
    *,
    inception=None,
) -> Path:
    """FID and KID records of one sampler's images; `inception` (pytorch-fid's network built from
    `weights`) is passed by a job that scores several samplers, which then builds it once."""
    from arelbo.core.safeload import load_npz
    from arelbo.metrics.inception_weights import build_inception

    ref = load_npz(reference, REBUILD_REFERENCE)  # in full, without pickle: a cut or unsafe file stops here
    expected = expected_reference_count(cfg, dataset)
    if int(ref["n"]) != expected:
        from arelbo.stages.data import DataError

        raise DataError(
            f"{reference} holds statistics of {int(ref['n'])} reference images, but config "
            f"{cfg.name!r} asks for {expected}; delete the file and re-run to recompute it"
        )
    if "features" not in ref:
        from arelbo.stages.data import DataError

        raise DataError(
            f"{reference} holds no reference features (written by an older arelbo; KID needs "
            "them); delete the file and re-run to recompute it"
        )
    from arelbo.core.provenance import provenance
    from arelbo.metrics.fid import (
        REFERENCE_KEY,
        inception_arithmetic,
        inception_features,
    )
    from arelbo.metrics.kid import kid

    device = pick_device(cfg.device)
    here = inception_arithmetic(device)
    there = {name: str(ref[name]) if name in ref else "unrecorded" for name in here}
    if there != here:
        from arelbo.stages.data import DataError

        raise DataError(
            f"{reference} holds features computed on {there['device']} in {there['precision']}, this job's "
            f"are computed on {here['device']} in {here['precision']}: an FID compares features of one "
            f"arithmetic ({', '.join(REFERENCE_KEY)} must match); delete the file and re-run to recompute it"
        )
    images = load_npz(samples, REBUILD)["images"]
    if inception is None:
        inception = build_inception(weights)
    inception = inception.to(device)
    features = inception_features(images, inception, batch_size=cfg.fid.batch_size, device=device, progress=False)
    stats = {"mu": ref["mu"], "sigma": ref["sigma"]}
    stream = sampler_seed(seed, sampler)
    value, spread, method = fid_with_uncertainty(cfg.fid, features, stats, stream, device)
    kid_mean, kid_std, subset = kid(features.astype(np.float32), ref["features"], seed=stream)
    sizes = {"n_samples": len(images), "n_reference": int(ref["n"])}
    prov = provenance(cfg, dataset, device)
    _write_records(
        out,
        [
            _record(
                cfg,
                dataset,
                model,
                seed,
                f"fid_{sampler}",
                value,
                provenance=prov,
                uncertainty=spread,
                uncertainty_method=method,
                **sizes,
            ),
            _record(
                cfg,
                dataset,
                model,
                seed,
                f"kid_{sampler}",
                kid_mean,
                provenance=prov,
                uncertainty=kid_std,
                uncertainty_method=f"std over 100 subsets of {subset}",
                kid_subset_size=subset,
                **sizes,
            ),
        ],
    )
    return out


def sample_and_score(cfg, dataset: str, model: str, seed: int, samplers: list[str]) -> list[Path]:
    """Every sampler of one trained model in one process (config `fid.batched`): each sampler's
    samples (.npz + PNG) and FID/KID records, the same files the one-job-per-cell `sample` and
    `metric fid_*` jobs write, from the same seeds; torch, torchvision and the Inception network are
    loaded once instead of once per cell. Paths follow arelbo.core.layout under the config's outdir."""
    from arelbo.core import layout
    from arelbo.metrics.inception_weights import build_inception

    model_file = layout.model_file(cfg.outdir, dataset, model, seed)
    latents = layout.latents_file(cfg.outdir, dataset, model, seed)
    samples = {s: layout.samples_path(cfg.outdir, dataset, model, seed, s) for s in samplers}
    for sampler, out in samples.items():
        if sampler in INTERPOLATION_SAMPLERS:
            sample(cfg, dataset, model_file, sampler, seed, out, latents=latents)
        else:
            sample(
                cfg,
                dataset,
                model_file,
                sampler,
                seed,
                out,
                estimator_file=layout.estimator_path(cfg.outdir, dataset, model, seed, sampler),
            )
    weights = layout.inception_weights(cfg.resources)
    reference = layout.fid_reference(
        cfg.resources, cfg.dataset_tag(dataset), cfg.fid.reference_split, cfg.fid_reference_count(dataset)
    )
    inception = build_inception(weights)
    return [
        fid(
            cfg,
            dataset,
            model,
            seed,
            sampler,
            out,
            reference,
            weights,
            layout.metric_path(cfg.outdir, dataset, model, seed, f"fid_{sampler}"),
            inception=inception,
        )
        for sampler, out in samples.items()
    ]
