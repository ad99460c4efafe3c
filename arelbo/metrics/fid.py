"""FID on in-memory uint8 image batches, with pytorch-fid's Inception and Fréchet distance.

Images are uint8 ``N×C×H×W`` (C ∈ {1, 3}); grey is repeated to three channels, each batch is
scaled to [0, 1] on its own and fed to pytorch-fid's ``InceptionV3`` (which resizes to 299×299 and
maps to [-1, 1]). Statistics and the distance are pytorch-fid's own (``np.mean``/``np.cov`` and
``calculate_frechet_distance``), so numbers are comparable with ``python -m pytorch_fid``
applied to the same pixels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from arelbo.core.runtime import atomic_path, file_digest, pick_device

log = logging.getLogger(__name__)

ImagesLike = torch.Tensor | np.ndarray
StatsLike = Sequence[np.ndarray] | Mapping[str, Any]

FINGERPRINT_CHARS = 16


def _check_images(images: ImagesLike) -> None:
    dtype = images.dtype
    if dtype not in (torch.uint8, np.uint8):
        raise TypeError(f"images must be uint8, got {dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be N×C×H×W with C in {{1, 3}}, got shape {tuple(images.shape)}")


def _model_device(model: torch.nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    return None


def inception_features(
    images: ImagesLike,
    model: torch.nn.Module,
    *,
    batch_size: int = 200,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Pool3 features (float64, N×2048) of uint8 ``images`` under pytorch-fid's ``model``.

    Only one batch at a time is converted to float and moved to ``device`` (default:
    :func:`arelbo.core.runtime.pick_device`).
    """
    from tqdm.auto import tqdm

    _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    if _model_device(model) != dev:
        model = model.to(dev)
    model.eval()
    # On CPU, oneDNN's NHWC convolutions run Inception ~1.6× faster; same network, same weights,
    # features equal to NCHW within float32 reassociation (~1e-5).
    memory_format = torch.channels_last if dev.type == "cpu" else torch.contiguous_format
    if memory_format is torch.channels_last:
        model = model.to(memory_format=memory_format)

    n = int(images.shape[0])
    out: list[np.ndarray] = []
    with torch.inference_mode(), tqdm(total=n, unit="img", desc="inception", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            x = torch.as_tensor(chunk).to(dev, non_blocking=True).float().div_(255.0)
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            pred = model(x.contiguous(memory_format=memory_format))
            if isinstance(pred, (list, tuple)):
                pred = pred[0]
            if pred.ndim == 4 and pred.shape[2:] != (1, 1):
                pred = F.adaptive_avg_pool2d(pred, output_size=(1, 1))  # as pytorch-fid does
            out.append(pred.reshape(pred.shape[0], -1).double().cpu().numpy())
            bar.update(x.shape[0])
    if not out:
        return np.zeros((0, 2048), dtype=np.float64)
    return np.concatenate(out, axis=0)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) exactly as pytorch-fid's ``calculate_activation_statistics``."""
    mu = np.mean(features, axis=0)
    sigma = np.cov(features, rowvar=False)
    return mu, sigma


def _as_mu_sigma(stats: StatsLike) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(stats, Mapping):
        return stats["mu"], stats["sigma"]
    mu, sigma = stats
    return mu, sigma


def frechet_distance(stats_a: StatsLike, stats_b: StatsLike) -> float:
    """Fréchet distance between two (mu, sigma) pairs (tuples or dicts with ``mu``/``sigma``)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    mu_a, sigma_a = _as_mu_sigma(stats_a)
    mu_b, sigma_b = _as_mu_sigma(stats_b)
    return float(calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b))


def _tr_sqrt_product_full_rank(sigma: np.ndarray, sigma_ref: np.ndarray, device) -> float:
    """Tr √(Σ·Σ_ref) for two D×D PSD matrices: with Σ_ref = VΛVᵀ and F = V√Λ, Σ·Σ_ref is similar to
    the symmetric PSD FᵀΣF, so the trace is Σᵢ √λᵢ(FᵀΣF): two symmetric eigenproblems in float64
    on `device` (torch.linalg.eigh) instead of scipy's serial sqrtm of the non-symmetric product."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=device)
    s_ref = torch.as_tensor(sigma_ref, dtype=torch.float64, device=device)
    evals, evecs = torch.linalg.eigh((s_ref + s_ref.T) / 2.0)
    factor = evecs * evals.clamp_min(0.0).sqrt()
    inner = factor.T @ s @ factor
    eig = torch.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(eig.clamp_min(0.0).sqrt().sum())


def frechet_distance_to_features(
    features: np.ndarray, ref: StatsLike, *, device: str | torch.device | None = None
) -> float:
    """Fréchet distance between the Gaussian fitted to ``features`` (N×D) and ``ref`` (mu, sigma):
    pytorch-fid's ``calculate_frechet_distance`` (the same number, tests/test_fid.py), its trace
    term Tr √(Σ·Σ_ref) computed from symmetric eigenproblems instead of scipy's sqrtm.

    When N − 1 < D the sample covariance is Σ = AAᵀ with A = (X − μ)ᵀ/√(N−1) of rank ≤ N − 1, and
    the non-zero eigenvalues of Σ·Σ_ref equal those of the small symmetric PSD matrix AᵀΣ_refA, so
    Tr √(Σ·Σ_ref) = Σᵢ √λᵢ(AᵀΣ_refA) exactly — an (N−1)-sized eigenproblem. Otherwise (N ≥ D + 1, the
    paper's 10,000 samples) it is Σᵢ √λᵢ(FᵀΣF), F = V√Λ from Σ_ref = VΛVᵀ: two D×D eigh in float64
    on ``device`` (a GPU's, where the FID job has one) — several times faster than scipy's sqrtm
    (benchmarks/fid_throughput.py measures both).
    """
    features = np.asarray(features, dtype=np.float64)
    n, dim = features.shape
    if n < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 feature vectors, got {n}")
    mu, sigma = feature_stats(features)
    mu_ref, sigma_ref = _as_mu_sigma(ref)
    if n - 1 >= dim:
        tr_covmean = _tr_sqrt_product_full_rank(sigma, sigma_ref, device or "cpu")
    else:
        a = (features - mu).T / np.sqrt(n - 1)  # D×N, Σ = AAᵀ (np.cov's normalisation)
        small = a.T @ sigma_ref @ a
        eig = np.linalg.eigvalsh((small + small.T) / 2.0)
        tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu - mu_ref
    return float(diff @ diff + np.trace(sigma) + np.trace(sigma_ref) - 2.0 * tr_covmean)


def _gram(y: torch.Tensor) -> torch.Tensor:
    """YᵀY. On the CPU through NumPy, whose BLAS call for a matrix times its own transpose is a
    symmetric rank-k update (half a general product's work: np.cov's speed); elsewhere torch's."""
    if y.device.type != "cpu":
        return y.T @ y
    y_np = y.numpy()
    return torch.from_numpy(y_np.T @ y_np)


def frechet_distance_and_standard_error(
    features: np.ndarray, ref: StatsLike, *, device: str | torch.device | None = None
) -> tuple[float, float]:
    """The Fréchet distance of ``features`` (N×D) to ``ref`` — the same number as
    `frechet_distance_to_features` — and its delta-method standard error (docs/design.md, "FID's
    uncertainty"), from one pass in float64 on ``device``.

    FID is a smooth function of the generated features' mean μ and covariance Σ. Its influence
    function at a feature vector x is
        IF(x) = 2(μ − μ_r)ᵀ(x − μ) + (x − μ)ᵀG(x − μ) − tr(GΣ),   G = I − S M^(−1/2) S,
    with S = Σ_r^(1/2) and M = SΣS (d tr √M / dΣ = ½ S M^(−1/2) S), and the standard error is
    std(IF(xᵢ))/√N over the N features — the infinitesimal jackknife, exact to first order in 1/N.
    The constant −tr(GΣ) does not change the spread and is not computed.

    N − 1 ≥ D: with Σ_r = VΛVᵀ and F = V√Λ, S M^(−1/2) S = F M'^(−1/2) Fᵀ for the similar
    M' = FᵀΣF = UθUᵀ, whose eigenvalues the distance needs anyway; the quadratic forms are
    ‖y‖² − ‖θ^(−1/4) Uᵀ Fᵀ y‖² (y = x − μ): one N×D by D×D product.

    N − 1 < D: M is singular, but the sample's own points keep Σ in the span of the centred features
    (reweighting them, as the jackknife and the bootstrap do, never leaves it), where M is regular.
    With A = Yᵀ/√(N−1) and K = AᵀΣ_rA (N×N, the non-zero spectrum of M), the quadratic form of xᵢ is
    (N−1)·[(AᵀA)ᵢᵢ − (K^(1/2))ᵢᵢ]: one N×N eigenproblem, as in `frechet_distance_to_features`.

    In both, directions with eigenvalue ≈ 0 (1e-12 of the largest) carry no spread of the features
    and are left out.
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float64), device=device or "cpu")
    n, dim = x.shape
    if n < 3:
        raise ValueError(f"a standard error of FID needs at least 3 feature vectors, got {n}")
    mu_ref, sigma_ref = (torch.as_tensor(np.asarray(a, dtype=np.float64), device=x.device) for a in _as_mu_sigma(ref))
    mu = x.mean(0)
    y = x - mu
    offset = mu - mu_ref
    squared_norms = (y * y).sum(1)
    if n - 1 >= dim:
        sigma = _gram(y) / (n - 1)
        evals, evecs = torch.linalg.eigh((sigma_ref + sigma_ref.T) / 2.0)
        f = evecs * evals.clamp_min(0.0).sqrt()  # Σ_r = F Fᵀ
        inner = f.T @ sigma @ f
        theta, u = torch.linalg.eigh((inner + inner.T) / 2.0)
        theta = theta.clamp_min(0.0)
        keep = theta > theta.max() * 1e-12
        projected = y @ ((f @ u[:, keep]) * theta[keep].pow(-0.25))  # rows θ^(−1/4) Uᵀ Fᵀ y
        quadratic = squared_norms - (projected * projected).sum(1)
    else:
        k = y @ sigma_ref @ y.T / (n - 1)  # N×N
        theta, w = torch.linalg.eigh((k + k.T) / 2.0)
        theta = theta.clamp_min(0.0)
        keep = theta > theta.max() * 1e-12
        root_diagonal = (w[:, keep] ** 2 * theta[keep].sqrt()).sum(1)  # (K^(1/2))ᵢᵢ
        quadratic = squared_norms - (n - 1) * root_diagonal
    distance = offset @ offset + squared_norms.sum() / (n - 1) + torch.trace(sigma_ref) - 2.0 * theta.sqrt().sum()
    influence = 2.0 * (y @ offset) + quadratic  # IF(xᵢ) up to the constant −tr(GΣ)
    return float(distance), float(influence.std() / np.sqrt(n))


# What a cached reference must match to be reused: its images, the Inception weights, and where and
# in which arithmetic the features were computed (a CPU's FP32 and a GPU's TF32 features differ).
REFERENCE_KEY = ("dataset", "split", "n", "weights", "device", "precision")


def inception_arithmetic(device: torch.device) -> dict[str, str]:
    """The device type and FP32 arithmetic Inception features computed now on `device` come from:
    part of the reference cache's key, and checked by the FID job against its own."""
    from arelbo.core.precision import current_precision

    return {"device": device.type, "precision": current_precision(device.type)}


def weights_fingerprint(weights_path: str | os.PathLike) -> str:
    """Short sha256 of the Inception weights file, used as a cache key."""
    return file_digest(weights_path, "sha256")[:FINGERPRINT_CHARS]


def _load_cached(cache_path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    from arelbo.core.safeload import UnreadableFile, load_npz

    if not cache_path.exists():
        return None
    try:
        # read in full without pickle: a cut, damaged or planted cache is recomputed, never trusted
        z = load_npz(cache_path, "recomputing it")
        stored = {name: str(z[name]) if name in z else None for name in REFERENCE_KEY}
        stored["n"] = int(z["n"])
        if stored != key:
            log.info("FID reference cache %s is stale (%s != %s); recomputing", cache_path, stored, key)
            return None
        if "features" not in z or z["features"].shape != (key["n"], z["mu"].shape[0]):
            log.info("FID reference cache %s has no reference features (KID needs them); recomputing", cache_path)
            return None
        return {"mu": z["mu"], "sigma": z["sigma"], "features": z["features"], **stored}
    except UnreadableFile as exc:
        log.warning("FID reference cache %s", exc)
        return None
    except Exception as exc:  # noqa: BLE001 - an .npz of other arrays: not our cache, recompute
        log.warning("could not read FID reference cache %s (%s); recomputing", cache_path, exc)
        return None


def reference_stats(
    cache_path: str | os.PathLike,
    images_fn: Callable[[], ImagesLike],
    *,
    dataset: str,
    split: str,
    count: int | None,
    weights_path: str | os.PathLike,
    model: torch.nn.Module | None = None,
    batch_size: int = 200,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Inception statistics of a reference image set, cached in an ``.npz``.

    The cache at ``cache_path`` is used when its stored REFERENCE_KEY (dataset, split, n, weights
    fingerprint, the device type and precision of the features) equals this call's; otherwise
    ``images_fn()`` is called (uint8 images; the first ``count`` are used, all of them when ``count``
    is None — the paper's "whole test split"), the statistics computed and the cache rewritten
    atomically.
    The pool3 features themselves are cached too (float32, ``features``): KID compares feature sets.
    Returns ``{"mu", "sigma", "features"}`` and the REFERENCE_KEY fields.
    """
    from arelbo.metrics.inception_weights import build_inception

    cache_path = Path(cache_path)
    images = None
    if count is None:
        images = images_fn()  # a memory-mapped split: cheap next to Inception; gives n for the cache key
        count = int(images.shape[0])
    dev = device if isinstance(device, torch.device) else pick_device(device)
    key = {
        "dataset": str(dataset),
        "split": str(split),
        "n": int(count),
        "weights": weights_fingerprint(weights_path),
        **inception_arithmetic(dev),
    }
    cached = _load_cached(cache_path, key)
    if cached is not None:
        return cached
    from arelbo.core.runtime import ensure_writable

    # a new shared file: a read-only `resources` is said now, not after the Inception pass
    ensure_writable(cache_path.parent)
    if images is None:
        images = images_fn()
    if images.shape[0] < count:
        raise ValueError(f"{dataset}/{split}: asked for {count} reference images, images_fn gave {images.shape[0]}")
    images = images[:count]
    if count < 2:
        raise ValueError(f"{dataset}/{split}: FID reference statistics need at least 2 images, got {count}")
    if model is None:
        model = build_inception(weights_path)
    feats = inception_features(images, model, batch_size=batch_size, device=dev, progress=progress)
    mu, sigma = feature_stats(feats)

    with atomic_path(cache_path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez appends nothing to the name
            np.savez(
                f,
                mu=mu,
                sigma=sigma,
                features=feats.astype(np.float32),
                n=np.int64(key["n"]),
                **{name: np.array(key[name]) for name in REFERENCE_KEY if name != "n"},
            )
    return {"mu": mu, "sigma": sigma, "features": feats.astype(np.float32), **key}


def fid_against(images: ImagesLike, ref: StatsLike, model: torch.nn.Module, **kw: Any) -> float:
    """FID of uint8 ``images`` against reference statistics ``ref`` (e.g. from :func:`reference_stats`).

    ``kw`` goes to :func:`inception_features` (batch_size, device, progress).
    """
    return frechet_distance_to_features(inception_features(images, model, **kw), ref)


class FidScorer:
    """An Inception model and its device, for repeated FID evaluations."""

    def __init__(
        self,
        weights_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 200,
        progress: bool = True,
    ) -> None:
        from arelbo.metrics.inception_weights import build_inception

        self.weights_path = Path(weights_path)
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.batch_size = batch_size
        self.progress = progress
        self.model = build_inception(self.weights_path).to(self.device)

    def features(self, images: ImagesLike) -> np.ndarray:
        return inception_features(
            images, self.model, batch_size=self.batch_size, device=self.device, progress=self.progress
        )

    def stats(self, images: ImagesLike) -> tuple[np.ndarray, np.ndarray]:
        return feature_stats(self.features(images))

    def fid(self, images: ImagesLike, ref: StatsLike) -> float:
        return frechet_distance_to_features(self.features(images), ref, device=self.device)


def fid_bootstrap(
    features: np.ndarray, ref: StatsLike, *, resamples: int, seed: int, device: str | torch.device = "cpu"
) -> np.ndarray:
    """FIDs of ``resamples`` bootstrap resamples (with replacement) of the generated ``features``
    against fixed reference statistics: the within-run uncertainty of one FID (docs/design.md §8).

    Each resample's covariance is np.cov of the resampled rows, written as a weighted sum over the
    distinct rows, so no resample is materialised: with Y = X − x̄ and bootstrap weights w (counts/N),
    μ_b = x̄ + Yᵀw and (N−1)·Σ_b = Yᵀ diag(Nw) Y − N·(Yᵀw)(Yᵀw)ᵀ. When N − 1 < D the trace of
    √(Σ_b Σ_ref) comes from the N×N matrix B Σ_ref Bᵀ, B = diag(√(Nw)) (Y − 1(Yᵀw)ᵀ)/√(N−1) (the
    frechet_distance_to_features identity); otherwise from the D×D matrix S Σ_b S, S = √Σ_ref. Both
    run in float64 on ``device`` and equal pytorch-fid's distance of the resampled rows
    (tests/test_fid.py).
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float64), device=device)
    mu_ref, sigma_ref = (torch.as_tensor(np.asarray(a, dtype=np.float64), device=device) for a in _as_mu_sigma(ref))
    n, dim = x.shape
    if n < 2:
        raise ValueError(f"a bootstrap of FID needs at least 2 feature vectors, got {n}")
    gen = np.random.default_rng(seed)
    counts = torch.as_tensor(
        np.stack([np.bincount(gen.integers(0, n, n), minlength=n) for _ in range(resamples)]),
        dtype=torch.float64,
        device=device,
    )  # resamples × N
    y = x - x.mean(0)
    offset = x.mean(0) - mu_ref
    tr_ref = torch.trace(sigma_ref)
    small = n - 1 < dim
    if small:
        k = y @ sigma_ref @ y.T  # N × N
        gram = y @ y.T
    else:
        evals, evecs = torch.linalg.eigh(sigma_ref)
        root = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T  # √Σ_ref
    out = np.empty(resamples)
    for b in range(resamples):
        c = counts[b]
        w = c / n
        shift = y.T @ w  # μ_b − x̄
        mean_term = float((offset + shift) @ (offset + shift))
        if small:
            # B = diag(√c)(Y − 1 shiftᵀ)/√(N−1); B Σ_ref Bᵀ and Tr Σ_b = Tr(B Bᵀ) from K and the Gram
            kw = k @ w
            centred = k - kw[:, None] - kw[None, :] + w @ kw
            gw = gram @ w
            g_centred_diag = torch.diagonal(gram) - 2 * gw + w @ gw
            root_c = c.sqrt()
            m = root_c[:, None] * centred * root_c[None, :] / (n - 1)
            tr_sigma = float((c * g_centred_diag).sum() / (n - 1))
        else:
            sigma_b = (y.T * c) @ y / (n - 1) - n * torch.outer(shift, shift) / (n - 1)
            m = root @ sigma_b @ root
            tr_sigma = float(torch.trace(sigma_b))
        eig = torch.linalg.eigvalsh((m + m.T) / 2)
        out[b] = mean_term + tr_sigma + float(tr_ref) - 2.0 * float(eig.clamp_min(0).sqrt().sum())
    return out
