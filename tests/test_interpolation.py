"""Spherical interpolation and the seeded pairs behind the interpolation FIDs (docs/design.md §6)."""

from __future__ import annotations

import math

import pytest
import torch

from arelbo.metrics.interpolation import interpolation_latents, interpolation_pairs, slerp


def random_rows(n=64, d=8, seed=0, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slerp_end_points_are_the_inputs(dtype):
    a, b = random_rows(seed=1, dtype=dtype), random_rows(seed=2, dtype=dtype)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    assert slerp(a, b, 0.3).dtype == dtype


def test_slerp_midpoint_is_symmetric():
    a, b = random_rows(seed=1), random_rows(seed=2)
    torch.testing.assert_close(slerp(a, b, 0.5), slerp(b, a, 0.5))
    # More generally, swapping the ends reverses the path.
    torch.testing.assert_close(slerp(a, b, 0.2), slerp(b, a, 0.8))


def test_slerp_stays_on_the_sphere_and_follows_the_angle():
    radius = 3.0
    a = radius * torch.nn.functional.normalize(random_rows(seed=1), dim=1)
    b = radius * torch.nn.functional.normalize(random_rows(seed=2), dim=1)
    omega = torch.arccos((a * b).sum(1) / radius**2)
    for t in torch.linspace(0, 1, 11).tolist():
        z = slerp(a, b, t)
        torch.testing.assert_close(z.norm(dim=1), torch.full((len(a),), radius, dtype=z.dtype))
        # The point sits at angle tΩ from a: constant angular speed along the great circle.
        torch.testing.assert_close(
            torch.arccos(((z * a).sum(1) / radius**2).clamp(-1, 1)), t * omega, atol=1e-6, rtol=1e-6
        )
    # Linear interpolation would cut through the ball instead.
    assert ((0.5 * (a + b)).norm(dim=1) < radius - 1e-3).all()


def test_slerp_of_orthogonal_unit_vectors_at_half():
    a, b = torch.eye(4)[:2]
    torch.testing.assert_close(slerp(a, b, 0.5), (a + b) / math.sqrt(2))


def test_slerp_of_parallel_and_antiparallel_vectors_is_linear_and_finite():
    a = random_rows(n=5, seed=3)
    for b in (2.5 * a, a.clone(), -a):
        for t in (0.0, 0.25, 0.5, 1.0):
            z = slerp(a, b, t)
            assert torch.isfinite(z).all()
            torch.testing.assert_close(z, (1 - t) * a + t * b)


def test_slerp_takes_one_t_per_pair():
    a, b = random_rows(n=6, seed=4), random_rows(n=6, seed=5)
    t = torch.tensor([0.0, 0.1, 0.5, 0.7, 0.9, 1.0], dtype=a.dtype)
    rows = torch.stack([slerp(a[i], b[i], float(t[i])) for i in range(len(t))])
    torch.testing.assert_close(slerp(a, b, t), rows)


def test_pairs_are_distinct_seeded_and_uniform():
    n_items, n_pairs = 20, 40_000
    pairs = interpolation_pairs(n_items, n_pairs, seed=7)
    assert pairs.shape == (n_pairs, 2) and pairs.dtype == torch.long
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert pairs.min() >= 0 and pairs.max() < n_items
    assert torch.equal(pairs, interpolation_pairs(n_items, n_pairs, seed=7))
    assert not torch.equal(pairs, interpolation_pairs(n_items, n_pairs, seed=8))
    # Each position: counts of every index ~ Binomial(n_pairs, 1/n) → mean 2000, sd ≈ 44; allow 5 sd.
    for column in pairs.T:
        counts = torch.bincount(column, minlength=n_items).double()
        assert (counts - n_pairs / n_items).abs().max() < 5 * math.sqrt(n_pairs / n_items)
    # b given a is uniform over the other n−1 items: the n(n−1) ordered pairs all occur ~100 times.
    ordered = torch.bincount(pairs[:, 0] * n_items + pairs[:, 1], minlength=n_items**2).view(n_items, n_items)
    off_diagonal = ordered[~torch.eye(n_items, dtype=torch.bool)].double()
    expected = n_pairs / (n_items * (n_items - 1))
    assert (off_diagonal - expected).abs().max() < 5 * math.sqrt(expected)
    assert ordered.diagonal().sum() == 0


def test_pairs_need_two_items():
    interpolation_pairs(2, 10, seed=0)  # the smallest valid case
    with pytest.raises(ValueError, match="at least 2"):
        interpolation_pairs(1, 10, seed=0)


def test_interpolation_latents_mid_and_random():
    mu = random_rows(n=50, d=8, seed=6, dtype=torch.float32)
    mid = interpolation_latents(mu, 300, "mid", seed=3)
    rnd = interpolation_latents(mu, 300, "random", seed=3)
    assert mid.latents.shape == (300, 8) and mid.latents.dtype == torch.float32
    assert torch.equal(mid.pairs, interpolation_pairs(50, 300, seed=3))
    assert torch.equal(rnd.pairs, mid.pairs)  # both modes interpolate the same pairs
    assert (mid.t == 0.5).all()
    assert ((rnd.t >= 0) & (rnd.t <= 1)).all() and 0.4 < rnd.t.mean() < 0.6 and rnd.t.std() > 0.2
    for result in (mid, rnd):
        a, b = mu[result.pairs[:, 0]], mu[result.pairs[:, 1]]
        torch.testing.assert_close(result.latents, slerp(a, b, result.t))
    again = interpolation_latents(mu, 300, "random", seed=3)
    assert torch.equal(again.latents, rnd.latents) and torch.equal(again.t, rnd.t)
    assert not torch.equal(interpolation_latents(mu, 300, "random", seed=4).t, rnd.t)


@pytest.mark.parametrize("mode", ["midpoint", "", "Random"])
def test_interpolation_latents_rejects_unknown_modes(mode):
    with pytest.raises(ValueError, match="choose one of mid, random"):
        interpolation_latents(random_rows(n=4), 3, mode, seed=0)
