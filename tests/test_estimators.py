"""Aggregate-posterior estimators (docs/design.md §5): the fits recover known distributions, sampling depends
only on the seed it is given, and files round-trip to identical samples."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from arelbo.core.registry import ESTIMATORS
from arelbo.models.estimators import (
    GMMEstimator,
    SecondStageSettings,
    fit_estimator,
    fit_second_stages,
    load_estimator,
    save_estimator,
)
from arelbo.models.training import TrainingDiverged

D = 4
MEAN = torch.tensor([1.0, -2.0, 0.5, 3.0])
# A rotated covariance with eigenvalues 1..4 (non-diagonal), and per-dimension encoder variances.
_Q = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(3)))[0]
COV_MU = _Q @ torch.diag(torch.tensor([1.0, 1.5, 2.5, 4.0])) @ _Q.T
ENCODER_VAR = torch.tensor([2.0, 1.0, 3.0, 2.0])
N_TRAIN, N_SAMPLES = 4000, 5000
# Small and fast enough for a test (the paper's settings need minutes here), and checked to reach
# the tolerances below over several seeds with a wide margin.
FAST = SecondStageSettings(epochs=40, lr=3e-3, batch_size=64, lr_halve_every=15, hidden=64, depth=3)


# tiny networks: one thread is ~10× faster than two fighting over a busy CPU (conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gaussian_rows(n, mean, cov, seed):
    eps = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=mean.dtype)
    return mean + eps @ torch.linalg.cholesky(cov).T


def whitened_errors(samples, mean, cov):
    """(‖L⁻¹(m̂ − m)‖, ‖L⁻¹ Ĉ L⁻ᵀ − I‖_F) with C = LLᵀ: errors in units of the target's own spread."""
    inv_l = torch.linalg.inv(torch.linalg.cholesky(cov))
    mean_error = (inv_l @ (samples.mean(0) - mean)).norm()
    cov_error = (inv_l @ samples.T.cov() @ inv_l.T - torch.eye(len(mean))).norm()
    return float(mean_error), float(cov_error)


def assert_seeded(est, tmp_path, name):
    first = est.sample(300, seed=11)
    assert first.shape == (300, est.d_z) and first.dtype == torch.float32 and first.device.type == "cpu"
    assert torch.equal(first, est.sample(300, seed=11))  # earlier draws do not shift later ones
    assert not torch.equal(first, est.sample(300, seed=12))
    path = tmp_path / name
    save_estimator(est, path)
    loaded = load_estimator(path)
    assert loaded.id == est.id and loaded.d_z == est.d_z
    assert torch.equal(loaded.sample(300, seed=11), first)
    return loaded


# ---------------------------------------------------------------------------- prior


def test_prior_is_standard_normal_and_seeded(tmp_path):
    est = fit_estimator("prior", torch.randn(10, 5), None, seed=0)
    assert est.id == "prior" and est.fit_log == []
    z = est.sample(20_000, seed=1).double()
    # sd of a mean: 1/√20000 ≈ 0.007; of a covariance entry: ≤ √(2/20000) = 0.01.
    assert z.mean(0).abs().max() < 0.04
    assert (z.T.cov() - torch.eye(5, dtype=z.dtype)).abs().max() < 0.06
    assert_seeded(est, tmp_path, "prior.pkl")


# ---------------------------------------------------------------------------- GMM


@pytest.fixture(scope="module")
def mixture():
    """Ten clusters 8 units apart (on a 3-D grid), all with one non-diagonal covariance S."""
    grid = torch.tensor([[i, j, k] for i in range(3) for j in range(2) for k in range(2)], dtype=torch.float64)[:10]
    means = 8.0 * grid
    shared_cov = torch.tensor([[1.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]], dtype=torch.float64)
    points = torch.cat([gaussian_rows(400, m, shared_cov, seed=i) for i, m in enumerate(means)])
    return means, shared_cov, points


def test_gmm10_recovers_the_mixture_and_samples_from_it(mixture, tmp_path):
    means, shared_cov, points = mixture
    est = fit_estimator("gmm10", points.float(), None, seed=0)
    assert isinstance(est, GMMEstimator) and est.converged and est.fit_log == []
    fitted = torch.from_numpy(est.means)
    rows, cols = linear_sum_assignment(torch.cdist(means, fitted).numpy())
    # Each true cluster has one fitted component: mean error ~ √(tr S / 400) ≈ 0.08.
    assert torch.cdist(means, fitted)[rows, cols].max() < 0.4
    np.testing.assert_allclose(est.weights, 0.1, atol=0.02)
    for k in cols:
        np.testing.assert_allclose(est.covariances[k], shared_cov.numpy(), atol=0.3)

    # Our sampler: each draw belongs to the cluster whose mean is nearest (clusters are 8 apart, at
    # most ~1 sd wide); its share follows the weights and its spread is S (tests the factor's orientation).
    z = est.sample(20_000, seed=5).double()
    nearest = torch.cdist(z, means).argmin(1)
    shares = torch.bincount(nearest, minlength=10) / len(z)
    assert (shares - 0.1).abs().max() < 0.03
    within = torch.cat([z[nearest == k] - z[nearest == k].mean(0) for k in range(10)])
    torch.testing.assert_close(within.T.cov(), shared_cov, atol=0.08, rtol=0)


def test_gmm_fit_and_sampling_are_seeded_and_round_trip(mixture, tmp_path):
    points = mixture[2].float()
    est = fit_estimator("gmm10", points, None, seed=3)
    np.testing.assert_array_equal(est.means, fit_estimator("gmm10", points, None, seed=3).means)
    loaded = assert_seeded(est, tmp_path, "gmm10.pkl")
    np.testing.assert_array_equal(loaded.covariances, est.covariances)
    # plain parameters, no sklearn object, readable without pickle's code execution
    payload = torch.load(tmp_path / "gmm10.pkl", weights_only=True)
    assert {type(v) for v in (payload["weights"], payload["means"], payload["covariances"])} == {torch.Tensor}
    assert payload["means"].dtype == torch.float64 and type(loaded.means) is np.ndarray


def test_gmm_with_fewer_points_than_components_says_what_to_change():
    with pytest.raises(ValueError, match=r"gmm100 fits 100 mixture components but got only 50 training latents"):
        fit_estimator("gmm100", torch.randn(50, 3), None, seed=0)


def test_unknown_estimator_id():
    with pytest.raises(ValueError, match="choose one of " + ", ".join(ESTIMATORS)):
        fit_estimator("gmm7", torch.randn(50, 3), None, seed=0)


# ---------------------------------------------------------------------------- second-stage VAE


@pytest.fixture(scope="module")
def encoder_outputs():
    mu = gaussian_rows(N_TRAIN, MEAN, COV_MU, seed=100)
    logvar = ENCODER_VAR.log().expand(N_TRAIN, D).clone()
    return mu, logvar


@pytest.fixture(scope="module")
def second_stage_fits(encoder_outputs):
    mu, logvar = encoder_outputs
    return {
        "stochastic": fit_estimator("2ndvae", mu, logvar, seed=0, second_stage=FAST, device="cpu", progress=False),
        "deterministic": fit_estimator("2ndvae", mu, None, seed=0, second_stage=FAST, device="cpu", progress=False),
    }


# Targets: a stochastic encoder's aggregate posterior is the law of u = μ + σ⊙ε, N(m, C_μ + diag σ²);
# a deterministic encoder's is that of μ, N(m, C_μ).
@pytest.mark.parametrize(
    "kind, target_cov, other_cov",
    [
        ("stochastic", COV_MU + torch.diag(ENCODER_VAR), COV_MU),
        ("deterministic", COV_MU, COV_MU + torch.diag(ENCODER_VAR)),
    ],
)
def test_second_stage_vae_reproduces_a_gaussian(second_stage_fits, kind, target_cov, other_cov):
    z = second_stage_fits[kind].sample(N_SAMPLES, seed=1)
    mean_error, cov_error = whitened_errors(z, MEAN, target_cov)
    # Sampling noise alone (4000 training + 5000 generated rows): mean error ≈ √(4/4000 + 4/5000) ≈ 0.04,
    # covariance error ≈ √(20/4000 + 20/5000) ≈ 0.1 (Frobenius over the d(d+1) effective terms). The
    # short fit adds a bias of about as much (γ² settles slightly above the smallest eigenvalue);
    # measured over seeds: mean ≤ 0.1, cov ≤ 0.12.
    assert mean_error < 0.2, mean_error
    assert cov_error < 0.3, cov_error
    # The other encoder type's target is ≥ 1 away: training on the wrong u would fail the above.
    assert whitened_errors(z, MEAN, other_cov)[1] > 0.6


def test_second_stage_log_and_schedule(second_stage_fits):
    fit_log = second_stage_fits["stochastic"].fit_log
    assert [row["epoch"] for row in fit_log] == list(range(1, FAST.epochs + 1))
    assert all(np.isfinite([row["loss"], row["nll"], row["kl"], row["gamma"]]).all() for row in fit_log)
    # StepLR: the rate halves after every `lr_halve_every` epochs.
    assert [row["lr"] for row in fit_log] == pytest.approx([FAST.lr * 0.5 ** ((e - 1) // 15) for e in range(1, 41)])
    # Fitting lowers the loss a lot, and the loss is NLL + KL.
    assert fit_log[-1]["loss"] < fit_log[0]["loss"] - 0.5
    assert fit_log[-1]["loss"] == pytest.approx(fit_log[-1]["nll"] + fit_log[-1]["kl"], rel=1e-5)
    # For u = μ + σ⊙ε, γ² cannot usefully exceed the smallest variance of u (≥ 2 here), nor vanish.
    assert 0.3 < fit_log[-1]["gamma"] < 2.5


def test_second_stage_sampling_is_seeded_and_round_trips(second_stage_fits, tmp_path):
    est = second_stage_fits["stochastic"]
    loaded = assert_seeded(est, tmp_path, "2ndvae.pt")
    assert loaded.settings == FAST and loaded.fit_log == est.fit_log
    for key, value in est.net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[key], value)


def test_second_stage_fit_is_seeded(encoder_outputs):
    mu, logvar = encoder_outputs
    tiny = replace(FAST, epochs=2, hidden=16)

    def fit(seed):
        return fit_estimator(
            "2ndvae", mu[:500], logvar[:500], seed=seed, second_stage=tiny, device="cpu", progress=False
        ).sample(100, seed=0)

    first = fit(4)
    assert torch.equal(first, fit(4))
    assert not torch.equal(first, fit(5))


def test_second_stage_stops_on_a_non_finite_loss(encoder_outputs):
    mu = encoder_outputs[0][:200].clone()
    mu[17, 2] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"2ndvae \(seed 0\): non-finite loss .* epoch 1"):
        fit_estimator(
            "2ndvae", mu, None, seed=0, second_stage=replace(FAST, epochs=1, hidden=8), device="cpu", progress=False
        )


def _plain_second_stage(mu, logvar, *, seed, settings):
    """docs/design.md §5's second stage written out without vmap: the reference a fit of one must equal."""
    from arelbo.core.runtime import seed_everything
    from arelbo.models.estimators import SecondStageVAE, second_stage_loss
    from arelbo.models.training import Batches, epoch_generator, run_epoch

    seed_everything(seed)
    net = SecondStageVAE(mu.shape[1], settings.hidden, settings.depth)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_halve_every, gamma=0.5)
    noise = torch.Generator().manual_seed(seed)
    for epoch in range(1, settings.epochs + 1):
        eps = torch.randn(mu.shape, generator=noise)  # drawn for every encoder: one noise stream for all
        u = mu if logvar is None else mu + (0.5 * logvar).exp() * eps
        run_epoch(
            net,
            Batches(u, settings.batch_size),
            lambda n, x: second_stage_loss(n, x, noise),
            optimizer=optimizer,
            generator=epoch_generator(seed, epoch),
        )
        scheduler.step()
    return net


def test_batched_second_stages_equal_separate_fits(encoder_outputs):
    """second_stage.batched: K second-stage VAEs fitted as one vectorised training equal K fits of
    one (same initial weights, batches and noise; Adam is elementwise), for stochastic and
    deterministic encoders mixed in one batch, after several epochs with a halved learning rate."""
    mu, logvar = encoder_outputs[0][:300], encoder_outputs[1][:300]
    latents = [(mu, logvar), (2.0 * mu.flip(0) - 1.0, None), (mu * 0.5 + 3.0, logvar - 1.0)]
    tiny = replace(FAST, epochs=4, lr_halve_every=2, hidden=16, depth=2)
    batched = fit_second_stages(latents, seed=3, settings=tiny, device="cpu", progress=False, names=["a", "b", "c"])
    for k, (m, lv) in enumerate(latents):
        alone = fit_estimator("2ndvae", m, lv, seed=3, second_stage=tiny, device="cpu", progress=False)
        plain = _plain_second_stage(m, lv, seed=3, settings=tiny)
        for key, value in alone.net.state_dict().items():
            torch.testing.assert_close(batched[k].net.state_dict()[key], value, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(plain.state_dict()[key], value, rtol=1e-4, atol=1e-5)
        assert [r["epoch"] for r in batched[k].fit_log] == [1, 2, 3, 4]
        assert [r["lr"] for r in batched[k].fit_log] == [r["lr"] for r in alone.fit_log]
        for batched_row, row in zip(batched[k].fit_log, alone.fit_log):
            for term in ("loss", "nll", "kl", "gamma"):
                assert batched_row[term] == pytest.approx(row[term], rel=1e-4, abs=1e-5)
        torch.testing.assert_close(batched[k].sample(50, seed=1), alone.sample(50, seed=1), rtol=1e-4, atol=1e-4)
    # the fits differ (the data do), so the equality above is not the same model three times
    assert not torch.allclose(batched[0].net.log_gamma, batched[1].net.log_gamma)


def test_batched_second_stages_name_the_diverging_model(encoder_outputs):
    mu = encoder_outputs[0][:200]
    bad = mu.clone()
    bad[17, 2] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"3 batched 2ndvae fits \(seed 0\), model rae: non-finite loss"):
        fit_second_stages(
            [(mu, None), (bad, None), (mu, None)],
            seed=0,
            settings=replace(FAST, epochs=1, hidden=8),
            device="cpu",
            progress=False,
            names=["vae", "rae", "wae"],
        )
    with pytest.raises(ValueError, match="latents of one shape"):
        fit_second_stages(
            [(mu, None), (mu[:100], None)], seed=0, settings=FAST, device="cpu", progress=False, names=["vae", "rae"]
        )


def test_load_rejects_foreign_files(tmp_path):
    from arelbo.core.safeload import UnreadableFile

    path = tmp_path / "other.pt"
    torch.save({"weights": 1}, path)
    with pytest.raises(UnreadableFile, match="not an estimator file"):
        load_estimator(path)
    path.write_bytes(pickle.dumps({"weights": 1}))  # an older arelbo's format: refused, never unpickled
    with pytest.raises(UnreadableFile, match="is a pickle .* delete it and re-run"):
        load_estimator(path)


def test_second_stage_noise_is_drawn_on_the_generators_device_and_moved_to_the_datas():
    """second_stage_loss draws ε from the generator it is given, on that generator's device, whatever
    device the latents are on (torch refuses a CUDA draw from a CPU generator): here the data are on
    the meta device, and the CPU generator is still the one consumed. Its CUDA twin: tests/test_gpu.py."""
    from arelbo.models.estimators import SecondStageVAE, second_stage_loss, second_stage_loss_given

    torch.manual_seed(0)
    net, u = SecondStageVAE(D, 8, 2), torch.randn(16, D)
    noise = torch.Generator().manual_seed(5)
    eps = torch.randn(u.shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(second_stage_loss(net, u, noise)[0], second_stage_loss_given(net, u, eps)[0])
    state = noise.get_state()
    loss, _ = second_stage_loss(net.to("meta"), u.to("meta"), noise)
    assert loss.device.type == "meta"
    assert not torch.equal(noise.get_state(), state), "ε was not drawn from the CPU generator"
