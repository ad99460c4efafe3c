"""A worked arelbo plugin (docs/extending.md): one model and one estimator the paper does not have.

- `beta_vae`: Higgins et al.'s β-VAE, the plain VAE of Table 3 (σx² = 1) with its KL term weighted
  by β (a hyper-parameter, `hparams.beta_vae.<dataset>.beta` in a config). β = 1 is the paper's VAE.
- `gmmdiag`: a Gaussian mixture with diagonal covariances fitted to the encoder means, next to the
  paper's full-covariance GMM-10/GMM-100 (`estimator_settings.gmmdiag.components`, default 10).

Everything here uses what the built-in models and estimators use: arelbo.objectives' building
blocks and signature, and arelbo.estimators.Estimator.
"""

from __future__ import annotations

import numpy as np
import torch

from arelbo.estimators import Estimator
from arelbo.objectives import gaussian_kl, gaussian_nll

ARELBO_PLUGIN_API = 1


# ---------------------------------------------------------------------------- the model


def beta_elbo(x, out, net, *, beta: float):
    """½‖x − μθ(z)‖² + β·KL(q(z|x) ‖ N(0, I)): the VAE (σx² = 1) of Table 3 with its KL weighted by β."""
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    rec = gaussian_nll(x, out.x_mean, zero).mean()
    kl = gaussian_kl(out.mu, out.logvar).mean()
    terms = {"rec": rec, "kl": kl, "mse": (x - out.x_mean).pow(2).flatten(1).sum(1).mean()}
    return rec + beta * kl, {k: v.detach() for k, v in terms.items()}


# ---------------------------------------------------------------------------- the estimator


class DiagonalGMM(Estimator):
    """A mixture of K Gaussians with diagonal covariances, kept as its parameters."""

    def __init__(self, weights: np.ndarray, means: np.ndarray, variances: np.ndarray, converged: bool):
        self.id, self.fit_log = "gmmdiag", []
        self.weights, self.means, self.variances = weights, means, variances
        self.converged = bool(converged)
        self.d_z = means.shape[1]

    def sample(self, n: int, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)  # seeded by `seed` only, as every arelbo estimator
        component = rng.choice(len(self.weights), size=n, p=self.weights / self.weights.sum())
        eps = rng.standard_normal((n, self.d_z))
        return torch.from_numpy(self.means[component] + eps * np.sqrt(self.variances[component])).float()

    def payload(self) -> dict:
        return {"weights": self.weights, "means": self.means, "variances": self.variances, "converged": self.converged}


def fit_gmm_diag(mu, logvar, *, seed, settings, device, progress) -> DiagonalGMM:
    from sklearn.mixture import GaussianMixture

    components = int(settings.get("components", 10))
    if len(mu) < components:
        raise ValueError(f"gmmdiag fits {components} components but got {len(mu)} training latents")
    gmm = GaussianMixture(n_components=components, covariance_type="diag", max_iter=2000, tol=1e-3, random_state=seed)
    gmm.fit(mu.detach().cpu().double().numpy())
    return DiagonalGMM(gmm.weights_, gmm.means_, gmm.covariances_, gmm.converged_)


def load_gmm_diag(payload: dict, device=None) -> DiagonalGMM:
    return DiagonalGMM(payload["weights"], payload["means"], payload["variances"], payload["converged"])


# ---------------------------------------------------------------------------- registration


def register(registry) -> None:
    registry.add_model(
        id="beta_vae",
        label="beta-VAE (beta = 4)",
        objective="arelbo_example_plugin:beta_elbo",
        stochastic=True,
        decoder_variance=None,
        has_prior=True,
        defaults={"mnist": {"beta": 4.0}, "celeba": {"beta": 4.0}},
        hparams_schema={"beta": {"type": "number", "exclusiveMinimum": 0}},
    )
    registry.add_estimator(
        id="gmmdiag",
        label="GMM-10 diag",
        fit="arelbo_example_plugin:fit_gmm_diag",
        load="arelbo_example_plugin:load_gmm_diag",
        columns=registry.DATASETS,
    )
