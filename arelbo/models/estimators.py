"""Estimators of the aggregate posterior q(z) (docs/design.md §5), fitted on the training set's encoder
outputs and sampled to generate: the prior N(0, I), Gaussian mixtures with 10/100 full-covariance
components, and Dai & Wipf's second-stage VAE.

Every estimator draws its samples from a generator seeded only by the `seed` given to `sample`,
so the same (estimator, n, seed) gives the same latents, also after a save/load round trip.

On disk (every kind, plugins' included; the caller picks the file name): torch.save of a plain dict
{"format", "id", "d_z", ...the estimator's payload}, read back with weights_only=True, so loading a file
never runs code (arelbo.core.safeload). The payload's top-level numpy arrays (the GMMs' parameters) are
stored as tensors and listed under NUMPY_KEYS, and come back as numpy arrays; numpy scalars are stored
as Python numbers. No sklearn object is stored, so a file stays loadable across sklearn versions:
  prior:  {"format", "id", "d_z"};
  gmm*:   + "weights", "means", "covariances" (float64 arrays), "converged", "n_iter";
  2ndvae: + "settings", "state_dict", "fit_log".
Older arelbo pickled the prior and the GMMs; a pickle can run code when loaded, so such a file is
refused with the fix (delete it and re-run to refit), told apart from the current format by content.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from arelbo.core.config import SecondStageSettings, paper_config
from arelbo.core.runtime import pick_device, seed_everything
from arelbo.models.training import Batches, StackedModels, epoch_generator, run_epoch

log = logging.getLogger(__name__)

GMM_COMPONENTS = {"gmm10": 10, "gmm100": 100}
FORMAT = "arelbo-estimator/1"
# The payload keys whose numpy arrays a file stores as tensors (weights_only reads no numpy array).
NUMPY_KEYS = "numpy_keys"
# What an estimator file that cannot be read needs: the fit job runs again.
REFIT = "delete it and re-run to fit the estimator again"


class Estimator:
    """A fitted q(z) (the interface every estimator implements, plugins' included; registered in
    arelbo.core.registry with its fit and load functions): `sample(n, seed)` → float32 n×d_z CPU tensor
    drawn from a generator seeded only by `seed`; `payload()` → what its load function needs to
    rebuild it (plain types, numpy arrays or CPU tensors)."""

    id: str
    d_z: int
    fit_log: list[dict]

    def sample(self, n: int, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def payload(self) -> dict:
        raise NotImplementedError


class PriorEstimator(Estimator):
    def __init__(self, d_z: int):
        self.id, self.d_z, self.fit_log = "prior", int(d_z), []

    def sample(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, self.d_z, generator=torch.Generator().manual_seed(seed))

    def payload(self) -> dict:
        return {}


class GMMEstimator(Estimator):
    """A full-covariance Gaussian mixture, kept as its parameters (float64 numpy arrays)."""

    def __init__(
        self,
        estimator_id: str,
        weights: np.ndarray,
        means: np.ndarray,
        covariances: np.ndarray,
        converged: bool,
        n_iter: int,
    ):
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

    def payload(self) -> dict:
        return {
            "weights": self.weights,
            "means": self.means,
            "covariances": self.covariances,
            "converged": self.converged,
            "n_iter": self.n_iter,
        }


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
    """Batch mean of Σ((u−û)/γ)²/2 + d·ln γ + KL(q(v|u) ‖ N(0, I)) (docs/design.md §5; the constant
    d/2·ln 2π of the Gaussian NLL is left out), with the reparameterisation noise drawn from `noise`
    on the generator's own device (torch draws only there) and moved to the data's."""
    eps = torch.randn(u.shape, generator=noise, device=noise.device, dtype=u.dtype)
    return second_stage_loss_given(net, u, eps.to(u.device))


def second_stage_loss_given(net: SecondStageVAE, u: torch.Tensor, eps: torch.Tensor):
    """second_stage_loss with its noise ε (the shape of u, since v ∈ R^d) given."""
    mu_v, logvar_v = net.encode(u)
    u_hat = net.decode(mu_v + (0.5 * logvar_v).exp() * eps)
    d = u.shape[1]
    nll = (((u - u_hat) / net.log_gamma.exp()) ** 2).sum(1) / 2 + d * net.log_gamma
    kl = 0.5 * (mu_v**2 + logvar_v.exp() - logvar_v - 1).sum(1)
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

    def payload(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "fit_log": self.fit_log,
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
        }


def fit_second_stage(
    mu: torch.Tensor,
    logvar: torch.Tensor | None,
    *,
    seed: int,
    settings: SecondStageSettings,
    device: torch.device,
    progress: bool,
) -> SecondStageEstimator:
    return fit_second_stages(
        [(mu, logvar)], seed=seed, settings=settings, device=device, progress=progress, names=["2ndvae"]
    )[0]


def fit_second_stages(
    latents: list[tuple[torch.Tensor, torch.Tensor | None]],
    *,
    seed: int,
    settings: SecondStageSettings,
    device: torch.device,
    progress: bool,
    names: list[str],
) -> list[SecondStageEstimator]:
    """One second-stage VAE per (μ, log σ²) of `latents` (N×d each, log σ² None for deterministic
    encoders), all trained as one vectorised training (training.StackedModels): K fits here equal K
    fits of one each, to float tolerance. Every fit starts from the same weights (the network is
    initialised after seeding with `seed`) and draws the same noise — the resampled u = μ + σ⊙ε
    every epoch, then ε for v in each step — from one generator seeded with `seed`; only the data
    differ. One fit is the case K = 1."""
    from tqdm import tqdm

    k_fits = len(latents)
    shapes = {tuple(mu.shape) for mu, _ in latents}
    if k_fits == 0 or len(shapes) != 1 or len(names) != k_fits:
        raise ValueError(
            f"fit_second_stages needs one name per fit and latents of one shape; got "
            f"{k_fits} latents of shapes {sorted(shapes)} and {len(names)} names"
        )
    for (mu, logvar), name in zip(latents, names):
        if mu.ndim != 2 or (logvar is not None and logvar.shape != mu.shape):
            raise ValueError(
                f"{name}: mu must be N×d_z and logvar None or the same shape; got {tuple(mu.shape)} "
                f"and {None if logvar is None else tuple(logvar.shape)}"
            )
    where = f"2ndvae (seed {seed})" if k_fits == 1 else f"{k_fits} batched 2ndvae fits (seed {seed})"
    n, d_z = next(iter(shapes))
    seed_everything(seed)  # network initialisation
    stacked = StackedModels([SecondStageVAE(d_z, settings.hidden, settings.depth)] * k_fits).to(device)
    optimizer = torch.optim.Adam(stacked.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_halve_every, gamma=0.5)
    # N×K×d: Batches draws rows (images of the training set) and each batch is B×K×d.
    mus = torch.stack([mu.to(device, torch.float32) for mu, _ in latents], dim=1)
    # σ = 0 for a deterministic encoder, so its u is μ exactly
    sigmas = torch.stack(
        [
            torch.zeros(n, d_z, device=device) if logvar is None else (0.5 * logvar.to(device, torch.float32)).exp()
            for _, logvar in latents
        ],
        dim=1,
    )
    # One generator for the resampled u and the reparameterisation noise, independent of the
    # global RNG (and of whatever else the process draws).
    noise = torch.Generator(device=device).manual_seed(seed)
    unused = torch.zeros(k_fits, device=device)

    def loss_fn(net, u):
        eps = torch.randn((u.shape[0], d_z), generator=noise, device=device)  # one ε for all K, as in K runs
        return net.apply(lambda model, u_k, _: second_stage_loss_given(model, u_k, eps), unused, u, x_dim=1)

    fit_logs: list[list[dict]] = [[] for _ in latents]
    for epoch in tqdm(range(1, settings.epochs + 1), desc=where, unit="epoch", disable=not progress):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        # u = μ + σ⊙ε, a fresh draw from each q(z|x) every epoch; deterministic encoders give μ.
        u = mus + sigmas * torch.randn((n, d_z), generator=noise, device=device)[:, None, :]
        terms = run_epoch(
            stacked,
            Batches(u, settings.batch_size),
            loss_fn,
            optimizer=optimizer,
            generator=epoch_generator(seed, epoch),
            where=where,
            epoch=epoch,
            names=names,
        )
        scheduler.step()
        gammas = stacked.state_of_param("log_gamma").exp().tolist()
        seconds = round(time.perf_counter() - started, 3)
        for k, fit_log in enumerate(fit_logs):
            # `seconds` is the whole epoch of all K fits, as `batched` says
            fit_log.append(
                {
                    "epoch": epoch,
                    "lr": lr,
                    **{name: values[k] for name, values in terms.items()},
                    "gamma": gammas[k],
                    "seconds": seconds,
                    **({"batched": k_fits} if k_fits > 1 else {}),
                }
            )
        log.debug("%s epoch %d: loss %s", where, epoch, " ".join(f"{v:.4f}" for v in terms["loss"]))
    estimators = []
    for k, fit_log in enumerate(fit_logs):
        net = SecondStageVAE(d_z, settings.hidden, settings.depth)
        net.load_state_dict(stacked.state_of(k))
        estimators.append(SecondStageEstimator(net.to(device), settings, fit_log))
    return estimators


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


# ---------------------------------------------------------------------------- the registered functions
# (arelbo.core.registry's estimator table names these, as a plugin names its own)


def fit_prior(mu, logvar, *, seed, settings, device, progress) -> PriorEstimator:
    return PriorEstimator(mu.shape[1])


def fit_gmm10(mu, logvar, *, seed, settings, device, progress) -> GMMEstimator:
    return fit_gmm("gmm10", mu, seed=seed)


def fit_gmm100(mu, logvar, *, seed, settings, device, progress) -> GMMEstimator:
    return fit_gmm("gmm100", mu, seed=seed)


def fit_2ndvae(mu, logvar, *, seed, settings, device, progress) -> SecondStageEstimator:
    return fit_second_stage(
        mu, logvar, seed=seed, settings=SecondStageSettings(**settings), device=device, progress=progress
    )


def load_prior(payload: dict, device=None) -> PriorEstimator:
    return PriorEstimator(payload["d_z"])


def load_gmm(payload: dict, device=None) -> GMMEstimator:
    return GMMEstimator(
        payload["id"],
        payload["weights"],
        payload["means"],
        payload["covariances"],
        payload["converged"],
        payload["n_iter"],
    )


def load_2ndvae(payload: dict, device=None) -> SecondStageEstimator:
    settings = SecondStageSettings(**payload["settings"])
    net = SecondStageVAE(payload["d_z"], settings.hidden, settings.depth)
    net.load_state_dict(payload["state_dict"])
    return SecondStageEstimator(
        net.to(torch.device("cpu") if device is None else torch.device(device)), settings, payload["fit_log"]
    )


def _entry(estimator_id: str):
    from arelbo.core.registry import ESTIMATORS

    if estimator_id not in ESTIMATORS:
        raise ValueError(
            f"unknown estimator {estimator_id!r}; choose one of {', '.join(ESTIMATORS)} (a plugin's "
            "estimator is known once its module is listed in the config's `plugins`)"
        )
    return ESTIMATORS[estimator_id]


def fit_estimator(
    estimator_id: str,
    mu: torch.Tensor,
    logvar: torch.Tensor | None,
    *,
    seed: int,
    settings: dict | None = None,
    second_stage: SecondStageSettings | None = None,
    device=None,
    progress: bool = True,
) -> Estimator:
    """Fit `estimator_id` on the training latents: `mu` N×d_z encoder means, `logvar` N×d_z encoder
    log-variances or None for deterministic encoders. `settings`: the estimator's own settings
    (`second_stage` is the 2nd VAE's, as a dataclass)."""
    entry = _entry(estimator_id)
    if mu.ndim != 2 or (logvar is not None and logvar.shape != mu.shape):
        raise ValueError(
            f"mu must be N×d_z and logvar None or the same shape; got {tuple(mu.shape)} and "
            f"{None if logvar is None else tuple(logvar.shape)}"
        )
    if second_stage is not None:
        settings = asdict(second_stage)
    elif settings is None and estimator_id == "2ndvae":
        settings = asdict(paper_config().second_stage.settings)  # the paper's (config/config.yaml)
    device = pick_device() if device is None else torch.device(device)
    est = entry.fit_fn()(mu, logvar, seed=seed, settings=dict(settings or {}), device=device, progress=progress)
    if not isinstance(est, Estimator) or est.id != estimator_id or est.d_z != mu.shape[1]:
        raise TypeError(
            f"estimator {estimator_id!r} ({entry.fit}) returned {type(est).__name__} with id "
            f"{getattr(est, 'id', None)!r} and d_z {getattr(est, 'd_z', None)!r}; expected an "
            f"arelbo.models.estimators.Estimator with id {estimator_id!r} and d_z {mu.shape[1]}"
        )
    return est


def _storable(est: Estimator) -> dict:
    """The dict a file holds: the payload with its numpy arrays as tensors (listed under NUMPY_KEYS)
    and numpy scalars as Python numbers, checked to load back with weights_only=True — a payload
    with an object that only pickle could store is refused here, when it is written, not when read."""
    import io

    stored, numpy_keys = {"format": FORMAT, "id": est.id, "d_z": int(est.d_z)}, []
    for key, value in est.payload().items():
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"estimator {est.id!r}: payload {key!r} is an object array; store numbers")
            value, numpy_keys = torch.from_numpy(np.ascontiguousarray(value)), [*numpy_keys, key]
        elif isinstance(value, np.generic):
            value = value.item()
        stored[key] = value
    if numpy_keys:
        stored[NUMPY_KEYS] = numpy_keys
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    try:
        torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever weights_only refuses
        raise TypeError(
            f"estimator {est.id!r}: its payload() holds something a data-only load refuses ({exc}); "
            "return tensors, numpy arrays, str, int, float, bool and lists/dicts of them"
        ) from None
    return stored


def save_estimator(est: Estimator, path: str | Path) -> None:
    from arelbo.core.runtime import atomic_torch_save

    atomic_torch_save(path, _storable(est))


def load_estimator(path: str | Path, device=None) -> Estimator:
    """The estimator saved at `path`, rebuilt by its registered load function; a 2nd VAE goes to
    `device` (default CPU). Read without running code; a pickle (an older arelbo's prior or GMM), a
    truncated or corrupt file raises UnreadableFile naming it and the fix."""
    from arelbo.core.safeload import UnreadableFile, load_torch

    path = Path(path)
    with open(path, "rb") as f:
        is_pickle = f.read(1) == b"\x80"  # a pickle protocol ≥ 2 opcode; torch.save writes a zip file
    if is_pickle:
        raise UnreadableFile(
            path,
            "is a pickle (how an older arelbo stored the prior and the GMMs); a pickle can run code "
            "when loaded, so arelbo no longer reads one",
            REFIT,
        )
    payload = load_torch(path, REFIT)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UnreadableFile(path, f"is not an estimator file written by arelbo.models.estimators ({FORMAT})", REFIT)
    for key in payload.pop(NUMPY_KEYS, []):
        payload[key] = payload[key].numpy()
    try:
        entry = _entry(payload["id"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return entry.load_fn()(payload, device)
