"""Estimators of the aggregate posterior q(z) (SPEC §5), fitted on the training set's encoder
outputs and sampled to generate: the prior N(0, I), Gaussian mixtures with 10/100 full-covariance
components, and Dai & Wipf's second-stage VAE.

Every estimator draws its samples from a generator seeded only by the `seed` given to `sample`,
so the same (estimator, n, seed) gives the same latents, also after a save/load round trip.

On disk (one format per kind; the caller picks the file name):
  prior, gmm*: a pickle of a plain dict {"format", "id", "d_z", ...numpy parameters} — no sklearn
               object, so a file stays loadable across sklearn versions;
  2ndvae:      torch.save of {"format", "id", "d_z", "settings", "state_dict", "fit_log"} (plain
               types only, so it loads with weights_only=True).
"""
from __future__ import annotations

import logging
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .runtime import atomic_path, pick_device, seed_everything
from .train import Batches, epoch_generator, run_epoch

log = logging.getLogger(__name__)

ESTIMATORS = ("prior", "2ndvae", "gmm10", "gmm100")
GMM_COMPONENTS = {"gmm10": 10, "gmm100": 100}
FORMAT = "arelbo-estimator/1"


@dataclass(frozen=True)
class SecondStageSettings:
    epochs: int = 70
    lr: float = 1e-4
    batch_size: int = 64
    lr_halve_every: int = 30
    hidden: int = 1024
    depth: int = 3


class Estimator:
    """A fitted q(z): `sample(n, seed)` → float32 n×d_z CPU tensor."""
    id: str
    d_z: int
    fit_log: list[dict]

    def sample(self, n: int, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def _payload(self) -> dict:
        raise NotImplementedError


class PriorEstimator(Estimator):
    def __init__(self, d_z: int):
        self.id, self.d_z, self.fit_log = "prior", int(d_z), []

    def sample(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, self.d_z, generator=torch.Generator().manual_seed(seed))

    def _payload(self) -> dict:
        return {}


class GMMEstimator(Estimator):
    """A full-covariance Gaussian mixture, kept as its parameters (float64 numpy arrays)."""

    def __init__(self, estimator_id: str, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
                 converged: bool, n_iter: int):
        self.id, self.fit_log = estimator_id, []
        self.weights, self.means, self.covariances = weights, means, covariances
        self.converged, self.n_iter = bool(converged), int(n_iter)
        self.d_z = means.shape[1]
        self._chol = np.linalg.cholesky(covariances)  # K×d×d, lower triangular

    def sample(self, n: int, seed: int) -> torch.Tensor:
        # Our own seeded draws rather than GaussianMixture.sample, which uses the object's
        # random_state (advancing between calls) and returns the samples grouped by component.
        rng = np.random.default_rng(seed)
        component = rng.choice(len(self.weights), size=n, p=self.weights / self.weights.sum())
        eps = rng.standard_normal((n, self.d_z))
        z = np.empty((n, self.d_z))
        for k in range(len(self.weights)):  # a loop over K avoids an n×d×d gather of factors
            rows = component == k
            z[rows] = self.means[k] + eps[rows] @ self._chol[k].T
        return torch.from_numpy(z).float()

    def _payload(self) -> dict:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances,
                "converged": self.converged, "n_iter": self.n_iter}


class SecondStageVAE(nn.Module):
    """Dai & Wipf's stage-2 VAE on latents u ∈ R^d (its own latent v ∈ R^d): each side is
    depth×(Linear, ReLU), then the side's input is concatenated to the last hidden layer before
    the linear head(s). γ is the learned scalar standard deviation of p(u|v), stored as ln γ."""

    def __init__(self, d_z: int, hidden: int, depth: int):
        super().__init__()

        def body() -> nn.Sequential:
            widths = [d_z] + [hidden] * depth
            return nn.Sequential(*[m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())])

        self.encoder, self.encoder_head = body(), nn.Linear(hidden + d_z, 2 * d_z)
        self.decoder, self.decoder_head = body(), nn.Linear(hidden + d_z, d_z)
        self.log_gamma = nn.Parameter(torch.zeros(()))

    def encode(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu_v, logvar_v = self.encoder_head(torch.cat([self.encoder(u), u], dim=1)).chunk(2, dim=1)
        return mu_v, logvar_v

    def decode(self, v: torch.Tensor) -> torch.Tensor:
        return self.decoder_head(torch.cat([self.decoder(v), v], dim=1))


def second_stage_loss(net: SecondStageVAE, u: torch.Tensor, noise: torch.Generator):
    """Batch mean of Σ((u−û)/γ)²/2 + d·ln γ + KL(q(v|u) ‖ N(0, I)) (SPEC §5; the constant
    d/2·ln 2π of the Gaussian NLL is left out)."""
    mu_v, logvar_v = net.encode(u)
    eps = torch.randn(mu_v.shape, generator=noise, device=u.device, dtype=u.dtype)
    u_hat = net.decode(mu_v + (0.5 * logvar_v).exp() * eps)
    d = u.shape[1]
    nll = (((u - u_hat) / net.log_gamma.exp()) ** 2).sum(1) / 2 + d * net.log_gamma
    kl = 0.5 * (mu_v ** 2 + logvar_v.exp() - logvar_v - 1).sum(1)
    return (nll + kl).mean(), {"nll": nll.mean().detach(), "kl": kl.mean().detach()}


class SecondStageEstimator(Estimator):
    def __init__(self, net: SecondStageVAE, settings: SecondStageSettings, fit_log: list[dict] | None = None):
        self.id, self.net, self.settings = "2ndvae", net.eval(), settings
        self.d_z = net.decoder_head.out_features
        self.fit_log = fit_log or []

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> torch.Tensor:
        # v and ε come from a CPU generator, so the draws do not depend on the network's device.
        generator = torch.Generator().manual_seed(seed)
        v = torch.randn(n, self.d_z, generator=generator)
        eps = torch.randn(n, self.d_z, generator=generator)
        device = self.net.log_gamma.device
        u_hat = self.net.decode(v.to(device)).cpu()
        return (u_hat + self.net.log_gamma.exp().cpu() * eps).float()

    def _payload(self) -> dict:
        return {"settings": asdict(self.settings), "fit_log": self.fit_log,
                "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()}}


def fit_second_stage(mu: torch.Tensor, logvar: torch.Tensor | None, *, seed: int,
                     settings: SecondStageSettings, device: torch.device, progress: bool) -> SecondStageEstimator:
    from tqdm import tqdm

    where = f"2ndvae (seed {seed})"
    seed_everything(seed)  # network initialisation
    d_z = mu.shape[1]
    net = SecondStageVAE(d_z, settings.hidden, settings.depth).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_halve_every, gamma=0.5)
    mu = mu.to(device, torch.float32)
    sigma = None if logvar is None else (0.5 * logvar.to(device, torch.float32)).exp()
    # One generator for the resampled u and the reparameterisation noise, independent of the
    # global RNG (and of whatever else the process draws).
    noise = torch.Generator(device=device).manual_seed(seed)

    def loss_fn(model, u):
        return second_stage_loss(model, u, noise)

    fit_log = []
    for epoch in tqdm(range(1, settings.epochs + 1), desc=where, unit="epoch", disable=not progress):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        # u = μ + σ⊙ε, a fresh draw from each q(z|x) every epoch; deterministic encoders give μ.
        u = mu if sigma is None else mu + sigma * torch.randn(mu.shape, generator=noise, device=device)
        terms = run_epoch(net, Batches(u, settings.batch_size), loss_fn, optimizer=optimizer,
                          generator=epoch_generator(seed, epoch), where=where, epoch=epoch)
        scheduler.step()
        fit_log.append({"epoch": epoch, "lr": lr, **terms, "gamma": net.log_gamma.exp().item(),
                        "seconds": round(time.perf_counter() - started, 3)})
        log.debug("%s epoch %d: loss %.4f gamma %.4g", where, epoch, terms["loss"], fit_log[-1]["gamma"])
    return SecondStageEstimator(net, settings, fit_log)


def fit_gmm(estimator_id: str, mu: torch.Tensor, *, seed: int) -> GMMEstimator:
    from sklearn.mixture import GaussianMixture

    k = GMM_COMPONENTS[estimator_id]
    if len(mu) < k:
        raise ValueError(
            f"{estimator_id} fits {k} mixture components but got only {len(mu)} training latents; "
            f"use a config with at least {k} training images (or leave {estimator_id} out of `estimators`)"
        )
    gmm = GaussianMixture(n_components=k, covariance_type="full", max_iter=2000, tol=1e-3, random_state=seed)
    gmm.fit(mu.detach().cpu().double().numpy())
    if not gmm.converged_:
        log.warning("%s (seed %d) did not converge in %d EM iterations", estimator_id, seed, gmm.n_iter_)
    return GMMEstimator(estimator_id, gmm.weights_, gmm.means_, gmm.covariances_, gmm.converged_, gmm.n_iter_)


def fit_estimator(estimator_id: str, mu: torch.Tensor, logvar: torch.Tensor | None, *, seed: int,
                  second_stage: SecondStageSettings = SecondStageSettings(), device=None,
                  progress: bool = True) -> Estimator:
    """Fit `estimator_id` on the training latents: `mu` N×d_z encoder means, `logvar` N×d_z encoder
    log-variances or None for deterministic encoders (only the 2nd VAE uses logvar)."""
    if estimator_id not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator_id!r}; choose one of {', '.join(ESTIMATORS)}")
    if mu.ndim != 2 or (logvar is not None and logvar.shape != mu.shape):
        raise ValueError(f"mu must be N×d_z and logvar None or the same shape; got {tuple(mu.shape)} and "
                         f"{None if logvar is None else tuple(logvar.shape)}")
    if estimator_id == "prior":
        return PriorEstimator(mu.shape[1])
    if estimator_id in GMM_COMPONENTS:
        return fit_gmm(estimator_id, mu, seed=seed)
    device = pick_device() if device is None else torch.device(device)
    return fit_second_stage(mu, logvar, seed=seed, settings=second_stage, device=device, progress=progress)


def save_estimator(est: Estimator, path: str | Path) -> None:
    payload = {"format": FORMAT, "id": est.id, "d_z": est.d_z, **est._payload()}
    with atomic_path(path) as tmp:
        if isinstance(est, SecondStageEstimator):
            torch.save(payload, tmp)
        else:
            with open(tmp, "wb") as f:
                pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)


def load_estimator(path: str | Path, device=None) -> Estimator:
    """The estimator saved at `path` (either format, told apart by content); a 2nd VAE goes to
    `device` (default CPU)."""
    path = Path(path)
    with open(path, "rb") as f:
        is_pickle = f.read(1) == b"\x80"  # a pickle protocol ≥ 2 opcode; torch.save writes a zip file
    if is_pickle:
        with open(path, "rb") as f:
            payload = pickle.load(f)
    else:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an estimator file written by arelbo.estimators ({FORMAT})")
    if payload["id"] == "prior":
        return PriorEstimator(payload["d_z"])
    if payload["id"] in GMM_COMPONENTS:
        return GMMEstimator(payload["id"], payload["weights"], payload["means"], payload["covariances"],
                            payload["converged"], payload["n_iter"])
    settings = SecondStageSettings(**payload["settings"])
    net = SecondStageVAE(payload["d_z"], settings.hidden, settings.depth)
    net.load_state_dict(payload["state_dict"])
    return SecondStageEstimator(net.to(torch.device("cpu") if device is None else torch.device(device)),
                                settings, payload["fit_log"])
