"""Evaluation stages on a small network: encode, sample (PNG-exact quantisation), MSE, FID record,
table assembly from the records."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from arelbo.core.runtime import seed_everything
from arelbo.models.nets import build_net
from arelbo.reporting import tables
from arelbo.stages import evaluate


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """model.pt files (untrained, seeded) in the format the trainer writes."""
    folder = tmp_path_factory.mktemp("models")
    files = {}
    for model_id in ("vae", "ae", "iso_i_arelbo"):
        seed_everything(0)
        net = build_net(model_id, "mnist").eval()
        path = folder / f"{model_id}.pt"
        torch.save({"state_dict": net.state_dict(), "net_config": asdict(net.config)}, path)
        files[model_id] = path
    return files


def test_decoded_images_are_quantised_like_a_png_writer(tmp_path, model_files):
    from torchvision.utils import save_image

    from arelbo.stages.train import load_trained

    net, _ = load_trained(model_files["vae"])
    z = torch.randn(6, 16, generator=torch.Generator().manual_seed(0)) * 3
    images = evaluate.decode_to_uint8(net, z, torch.device("cpu"))
    with torch.no_grad():
        x_mean, _ = net.decode(z)
    for i in range(len(z)):
        save_image(x_mean[i], tmp_path / f"{i}.png")
        written = np.asarray(Image.open(tmp_path / f"{i}.png"))[..., 0]
        np.testing.assert_array_equal(images[i, 0], written)


@pytest.mark.parametrize("n, channels", [(64, 1), (13, 3), (5, 1)])
def test_image_grid_matches_torchvision_make_grid(n, channels):
    from torchvision.utils import make_grid

    images = np.random.default_rng(n).integers(0, 256, (n, channels, 28, 20), dtype=np.uint8)
    expected = make_grid(torch.from_numpy(images), nrow=8, padding=2, pad_value=255).permute(1, 2, 0).numpy()
    got = evaluate.image_grid(images)
    np.testing.assert_array_equal(got, expected[..., :channels])  # make_grid repeats one channel to three


def test_encode_and_interpolation_samples(tmp_path, ci_config, model_files):
    latents = evaluate.encode(ci_config, "mnist", model_files["vae"], tmp_path / "latents.npz")
    data = np.load(latents)
    assert data["train_mu"].shape == (512, 16) and data["train_logvar"].shape == (512, 16)
    assert data["test_mu"].shape == (128, 16)
    det = np.load(evaluate.encode(ci_config, "mnist", model_files["ae"], tmp_path / "ae.npz"))
    assert "train_logvar" not in det  # deterministic encoder: μ only

    out = evaluate.sample(
        ci_config, "mnist", model_files["vae"], "interp_random", 0, tmp_path / "a.npz", latents=latents
    )
    again = evaluate.sample(
        ci_config, "mnist", model_files["vae"], "interp_random", 0, tmp_path / "b.npz", latents=latents
    )
    a, b = np.load(out), np.load(again)
    assert a["images"].dtype == np.uint8 and a["images"].shape == (ci_config.fid.n_samples, 1, 28, 28)
    np.testing.assert_array_equal(a["images"], b["images"])  # seeded
    assert (a["pairs"][:, 0] != a["pairs"][:, 1]).all() and ((0 <= a["t"]) & (a["t"] <= 1)).all()
    grid = Image.open(tmp_path / "a.png")
    rows = -(-min(ci_config.fid.n_samples, 64) // 8)
    assert grid.size == (8 * 30 + 2, rows * 30 + 2)  # 8 columns of 28 px images with 2 px padding


def test_mid_and_random_interpolations_share_their_pairs(tmp_path, ci_config, model_files):
    """Table 4's two columns differ only in t: the same seeded test pairs for both samplers."""
    latents = evaluate.encode(ci_config, "mnist", model_files["vae"], tmp_path / "latents.npz")
    mid = np.load(
        evaluate.sample(ci_config, "mnist", model_files["vae"], "interp_mid", 2, tmp_path / "m.npz", latents=latents)
    )
    rnd = np.load(
        evaluate.sample(ci_config, "mnist", model_files["vae"], "interp_random", 2, tmp_path / "r.npz", latents=latents)
    )
    np.testing.assert_array_equal(mid["pairs"], rnd["pairs"])
    assert (mid["t"] == 0.5).all() and not (rnd["t"] == 0.5).all()
    other_seed = np.load(
        evaluate.sample(ci_config, "mnist", model_files["vae"], "interp_mid", 3, tmp_path / "o.npz", latents=latents)
    )
    assert not np.array_equal(other_seed["pairs"], mid["pairs"])  # each config seed has its own pairs


def test_mse_is_the_per_image_sum_of_squares(tmp_path, ci_config, model_files):
    from arelbo.stages.data import load_split
    from arelbo.stages.train import load_trained

    (record,) = json.loads(
        evaluate.mse(ci_config, "mnist", "ae", model_files["ae"], 0, tmp_path / "m.json").read_text()
    )
    net, _ = load_trained(model_files["ae"])
    x = load_split("mnist", "test", ci_config).float() / 255
    with torch.no_grad():
        expected = (x - net.decode(net.encode(x)[0])[0]).pow(2).sum((1, 2, 3)).mean().item()
    assert record["value"] == pytest.approx(expected, rel=1e-5)
    assert record["metric"] == "mse" and record["table"] == 3 and record["config"] == "ci"
    # its standard error over the test images, and where it came from
    per_image = (x - net.decode(net.encode(x)[0])[0]).detach().pow(2).sum((1, 2, 3))
    assert record["uncertainty"] == pytest.approx(float(per_image.std() / len(x) ** 0.5), rel=1e-4)
    assert record["n_images"] == len(x) and record["reduced"] is True
    assert len(record["config_hash"]) == 16 and record["commit"] and record["data_hash"] != "missing"
    assert record["dirty"] in (True, False)


def test_arelbo_records_the_sigma_x2_its_objective_implies(tmp_path, ci_config, model_files, monkeypatch):
    """Iso-I AR-ELBO's σx² is the minibatch MLE MSE/d (the paper's 0.0056 = 4.40/784): recorded beside
    the MSE, close to the deterministic reconstruction's MSE/d, with the standard error of its
    minibatch estimates; models without Σx have none."""
    monkeypatch.setattr(evaluate, "DECODE_BATCH", 32)  # 4 minibatches of the 128 test images
    records = json.loads(
        evaluate.mse(
            ci_config, "mnist", "iso_i_arelbo", model_files["iso_i_arelbo"], 0, tmp_path / "m.json"
        ).read_text()
    )
    mse, sigma_x2 = records
    assert sigma_x2["metric"] == "sigma_x2" and sigma_x2["table"] == 3
    assert sigma_x2["value"] == pytest.approx(mse["value"] / 784, rel=0.05)
    assert 0 < sigma_x2["uncertainty"] < 0.05 * sigma_x2["value"]
    (only,) = json.loads(
        evaluate.mse(ci_config, "mnist", "vae", model_files["vae"], 0, tmp_path / "v.json").read_text()
    )
    assert only["metric"] == "mse"


def test_records_assemble_into_table3(tmp_path, ci_config):
    records = []
    for model, mse, fids in (("vae", 20.0, {"prior": 50.0, "gmm10": 40.0}), ("ae", 5.0, {"gmm10": 30.0})):
        base = dict(table=3, dataset="mnist", model=model, seed=0, config="ci", commit="abc")
        records.append({**base, "metric": "mse", "value": mse})
        records += [{**base, "metric": f"fid_{k}", "value": v} for k, v in fids.items()]
    paths = []
    for i, record in enumerate(records):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(record))
    outputs = tables.assemble_table(ci_config, 3, paths, tmp_path / "out")
    tex = outputs["tex"].read_text()
    assert "AE & \\textbf{5.00} & -- " in tex and "config: ci" in tex and "not comparable" in tex


@pytest.mark.slow
def test_fid_record_against_the_cached_reference(tmp_path, ci_config, model_files):
    from arelbo.core import layout
    from arelbo.metrics.fid import reference_stats
    from arelbo.stages.data import load_split

    cfg = ci_config
    reference = layout.fid_reference(cfg.resources, "mnist", cfg.fid.reference_split, cfg.fid.reference_count)
    reference_stats(
        reference,
        lambda: load_split("mnist", "test", cfg, limit=cfg.fid.reference_count),
        dataset="mnist",
        split="test",
        count=cfg.fid.reference_count,
        weights_path=layout.inception_weights(cfg.resources),
        progress=False,
    )
    images = load_split("mnist", "test", cfg)[-cfg.fid.n_samples :].numpy()
    samples = tmp_path / "real.npz"
    np.savez(samples, images=images)
    out = evaluate.fid(
        cfg,
        "mnist",
        "vae",
        0,
        "interp_mid",
        samples,
        reference,
        layout.inception_weights(cfg.resources),
        tmp_path / "fid.json",
    )
    record, kid = json.loads(out.read_text())
    assert record["metric"] == "fid_interp_mid" and record["table"] == 4
    assert np.isfinite(record["value"]) and record["value"] > 0
    assert record["n_samples"] == cfg.fid.n_samples and record["n_reference"] == cfg.fid.reference_count
    assert record["uncertainty"] > 0 and record["uncertainty_method"].startswith("delta method")
    # the record's standard error is the delta method's on the same features (the paper config's default)
    from arelbo.metrics.fid import frechet_distance_and_standard_error, inception_features
    from arelbo.metrics.inception_weights import build_inception

    features = inception_features(images, build_inception(layout.inception_weights(cfg.resources)), progress=False)
    value, se = frechet_distance_and_standard_error(features, np.load(reference))
    assert record["value"] == pytest.approx(value, rel=1e-6) and record["uncertainty"] == pytest.approx(se, rel=1e-4)
    # KID of the same samples, next to it: torch-fidelity's subsets of min(1000, N_gen, N_ref)
    assert kid["metric"] == "kid_interp_mid" and kid["table"] == 4 and np.isfinite(kid["value"])
    assert kid["kid_subset_size"] == min(1000, cfg.fid.n_samples, cfg.fid.reference_count)
    assert kid["uncertainty"] >= 0 and kid["n_samples"] == record["n_samples"]


@pytest.mark.slow
def test_fid_refuses_reference_statistics_of_another_size(tmp_path, ci_config):
    """A reference .npz whose n is not what the config asks for (a stale or foreign file) is refused
    with the file and the fix named, never silently scored against."""
    from arelbo.core import layout

    reference = tmp_path / "ref.npz"
    np.savez(reference, mu=np.zeros(2048), sigma=np.eye(2048), n=np.int64(ci_config.fid.reference_count + 1))
    samples = tmp_path / "s.npz"
    np.savez(samples, images=np.zeros((4, 1, 28, 28), np.uint8))
    from arelbo.stages.data import DataError

    with pytest.raises(DataError, match=r"ref\.npz holds statistics of 21 reference images.*asks for 20.*delete"):
        evaluate.fid(
            ci_config,
            "mnist",
            "vae",
            0,
            "prior",
            samples,
            reference,
            layout.inception_weights(ci_config.resources),
            tmp_path / "fid.json",
        )
    assert not (tmp_path / "fid.json").exists()


@pytest.mark.parametrize(
    "stored",
    [{"device": "cuda", "precision": "tf32"}, {"device": "cpu", "precision": "tf32"}, {}],
    ids=["another-device", "another-precision", "unrecorded"],
)
def test_fid_refuses_reference_features_of_another_arithmetic(tmp_path, ci_config, stored):
    """The FID job compares its Inception features with the reference's only when both were computed
    on the same device type in the same arithmetic (a GPU's TF32 features against a CPU's FP32
    statistics would be a biased FID); a reference that does not say how it was computed (an older
    arelbo's) is refused too, each with the fix named, before Inception runs."""
    from arelbo.core import layout
    from arelbo.stages.data import DataError

    reference = tmp_path / "ref.npz"
    np.savez(
        reference,
        mu=np.zeros(2048),
        sigma=np.eye(2048),
        features=np.zeros((ci_config.fid.reference_count, 2048), np.float32),
        n=np.int64(ci_config.fid.reference_count),
        **{k: np.array(v) for k, v in stored.items()},
    )
    samples = tmp_path / "s.npz"
    np.savez(samples, images=np.zeros((4, 1, 28, 28), np.uint8))
    there = f"{stored.get('device', 'unrecorded')} in {stored.get('precision', 'unrecorded')}"
    with pytest.raises(
        DataError, match=rf"ref\.npz holds features computed on {there}, this job's are computed on cpu in fp32.*delete"
    ):
        evaluate.fid(
            ci_config,
            "mnist",
            "vae",
            0,
            "prior",
            samples,
            reference,
            layout.inception_weights(ci_config.resources),
            tmp_path / "fid.json",
        )
    assert not (tmp_path / "fid.json").exists()


@pytest.mark.slow
def test_one_job_per_model_writes_what_the_per_cell_jobs_write(tmp_path, ci_config, model_files):
    """fid.batched's `sample_and_score` (samplers of one model in one process, Inception built once)
    writes the same samples and the same FID/KID values as one `sample` and one `metric fid_*` job per
    cell: batching is a scheduling choice, never a change of outputs."""
    import dataclasses
    import shutil

    from arelbo.core import layout
    from arelbo.metrics.fid import reference_stats
    from arelbo.stages.data import load_split

    cfg = dataclasses.replace(ci_config, outdir=str(tmp_path / "out"))
    reference = layout.fid_reference(cfg.resources, "mnist", cfg.fid.reference_split, cfg.fid.reference_count)
    weights = layout.inception_weights(cfg.resources)
    reference_stats(
        reference,
        lambda: load_split("mnist", "test", cfg, limit=cfg.fid.reference_count),
        dataset="mnist",
        split="test",
        count=cfg.fid.reference_count,
        weights_path=weights,
        progress=False,
    )
    model_dir = layout.model_dir(cfg.outdir, "mnist", "vae", 1)
    model_dir.mkdir(parents=True)
    shutil.copy(model_files["vae"], model_dir / "model.pt")
    latents = evaluate.encode(cfg, "mnist", model_dir / "model.pt", model_dir / "latents.npz")
    for estimator in ("prior", "gmm10"):
        evaluate.fit_and_save(
            cfg, estimator, latents, 1, layout.estimator_path(cfg.outdir, "mnist", "vae", 1, estimator)
        )
    samplers = ["prior", "gmm10", "interp_random"]

    written = evaluate.sample_and_score(cfg, "mnist", "vae", 1, samplers)

    assert written == [layout.metric_path(cfg.outdir, "mnist", "vae", 1, f"fid_{s}") for s in samplers]
    for sampler in samplers:
        source = (
            {"latents": latents}
            if sampler.startswith("interp_")
            else {"estimator_file": layout.estimator_path(cfg.outdir, "mnist", "vae", 1, sampler)}
        )
        alone = evaluate.sample(cfg, "mnist", model_dir / "model.pt", sampler, 1, tmp_path / f"{sampler}.npz", **source)
        batched = layout.samples_path(cfg.outdir, "mnist", "vae", 1, sampler)
        assert batched.with_suffix(".png").is_file()
        for key in np.load(alone).files:
            np.testing.assert_array_equal(np.load(batched)[key], np.load(alone)[key])
        records = json.loads(
            evaluate.fid(
                cfg, "mnist", "vae", 1, sampler, alone, reference, weights, tmp_path / f"fid_{sampler}.json"
            ).read_text()
        )
        batched_records = json.loads(layout.metric_path(cfg.outdir, "mnist", "vae", 1, f"fid_{sampler}").read_text())
        assert [r["metric"] for r in batched_records] == [f"fid_{sampler}", f"kid_{sampler}"]
        for one, other in zip(records, batched_records):
            assert one["metric"] == other["metric"] and one["n_samples"] == other["n_samples"]
            assert one["value"] == pytest.approx(other["value"], rel=1e-9)
            assert one["uncertainty"] == pytest.approx(other["uncertainty"], rel=1e-9)


@pytest.mark.parametrize("uncertainty", ["delta", "bootstrap", "none"])
def test_each_fid_uncertainty_method_is_used_and_named(ci_config, uncertainty):
    """fid.uncertainty picks the estimate and the record names it: the delta method's standard
    error, the bootstrap's std over fid.bootstrap_resamples resampled FIDs (the same resamples for the
    same stream), or none (NaN); the FID itself is the same in all three."""
    import dataclasses

    from arelbo.metrics.fid import feature_stats, fid_bootstrap, frechet_distance_and_standard_error

    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 16)) * np.linspace(0.5, 2, 16)
    ref = dict(zip(("mu", "sigma"), feature_stats(rng.normal(size=(200, 16)) + 0.3)))
    fid_cfg = dataclasses.replace(ci_config.fid, uncertainty=uncertainty, bootstrap_resamples=50)
    value, spread, method = evaluate.fid_with_uncertainty(fid_cfg, features, ref, stream=7, device="cpu")
    expected_value, delta_se = frechet_distance_and_standard_error(features, ref)
    assert value == pytest.approx(expected_value, rel=1e-7)
    if uncertainty == "delta":
        assert spread == delta_se and method.startswith("delta method")
    elif uncertainty == "bootstrap":
        assert spread == pytest.approx(np.std(fid_bootstrap(features, ref, resamples=50, seed=7), ddof=1))
        assert method == "bootstrap over generated images (50 resamples)"
    else:
        assert np.isnan(spread) and method.startswith("none")


def test_a_bootstrap_without_resamples_is_refused_before_any_work(tmp_path):
    from arelbo.core.config import ConfigError, load_config

    overlay = tmp_path / "fid.yaml"
    overlay.write_text("fid: {uncertainty: bootstrap, bootstrap_resamples: 1}\n")
    with pytest.raises(ConfigError, match=r"fid.bootstrap_resamples: 1 cannot give a standard deviation.*delta"):
        load_config("config/ci.yaml", str(overlay), check_folders=False)
