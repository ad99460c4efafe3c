"""The paper configuration's own code paths, run through Snakemake.

config/config.yaml is what users run. The suite's per-cell end-to-end run (tests/e2e_run.py, fixture
`e2e_run`) runs it with an overlay that changes only sizes (data limits, epochs, FID sample count,
Section 3 grid length and figure sizes) and labels the run as reduced; everything else is the
paper's: the per-cell job layout, `fid.reference_count: null` (the whole test split), both datasets
(CelebA as the generated stand-in, read through data.celeba.root like a real download), all four
estimators including GMM-100, the paper's batch sizes, hyper-parameters and second-stage network.
The same run serves tests/test_workflow.py; it used to be a run of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from e2e_run import MODELS, N_SAMPLES, NAME, paper_sizes_overlay
from test_workflow import _paper_shaped, snakemake

REPO = Path(__file__).resolve().parents[1]


def test_the_overlay_changes_only_sizes_and_labels(tmp_path):
    """Guards the claim above: whatever the overlay touches is a size or a label."""
    from arelbo.core.config import load_config

    def leaves(tree, prefix=()):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, (*prefix, key))
            else:
                yield (*prefix, key)

    overlay = yaml.safe_load(paper_sizes_overlay(tmp_path / "o.yaml", "resources/celeba-synthetic").read_text())
    size_keys = {"limit", "epochs", "n_samples", "train_limit", "log10_sigma_x2", "log10_sigma_z2"}
    labels = {("name",), ("reduced",), ("description",), ("models",), ("data", "celeba", "root")}
    for leaf in leaves(overlay):
        assert leaf in labels or size_keys & set(leaf) or leaf[:2] == ("section3", "figures"), leaf
    paper = load_config(check_folders=False)
    merged = load_config(tmp_path / "o.yaml", check_folders=False)
    assert merged.fid.reference_count is None and merged.estimators == paper.estimators == (
        "prior",
        "2ndvae",
        "gmm10",
        "gmm100",
    )
    assert merged.datasets == ("mnist", "celeba") and merged.data.celeba.synthetic_standin is None
    assert merged.train.mnist.batch_size == paper.train.mnist.batch_size
    assert merged.raw["hparams"] == paper.raw["hparams"]


@pytest.fixture(scope="module")
def paper_run(e2e_run):
    failure = e2e_run.failure()
    assert failure is None, failure
    return e2e_run.out


@pytest.mark.slow
def test_paper_config_runs_to_tables_1_3_4_5(paper_run):
    results = paper_run / "results"
    table3 = _paper_shaped(results / "tables" / "table3_paper.csv")
    assert list(table3.index) == MODELS
    assert "celeba/fid_gmm100" in table3.columns and "mnist/fid_gmm100" not in table3.columns
    assert "celeba/kid_gmm100 (x1e3)" in table3.columns  # KID beside every FID
    for column, cells in table3.drop(columns="label").items():
        for model, cell in cells.items():
            undefined = column.endswith(("fid_prior", "kid_prior (x1e3)")) and model == "ae"
            assert (cell == "–") if undefined else (cell and cell != "–"), (column, model, cell)
    table4 = _paper_shaped(results / "tables" / "table4_paper.csv")
    assert not (table4 == "–").any().any() and not (table4 == "").any().any()
    for n in (1, 5):
        table = _paper_shaped(results / "tables" / f"table{n}_paper.csv")
        assert table.size and not (table == "").any().any(), table
    assert "not comparable" in (results / "table3.tex").read_text()


@pytest.mark.slow
def test_paper_fids_use_the_whole_configured_test_split(paper_run, ci_config):
    from arelbo.core import layout

    records = [r for p in (paper_run / "results" / "metrics").rglob("fid_*.json") for r in json.loads(p.read_text())]
    assert len(records) == 2 * (2 * 5 - 1 + 2 * 6 - 1)  # FID and KID: MNIST 5, CelebA 6 (GMM-100); no AE prior
    n_reference = {r["dataset"] for r in records}
    assert n_reference == {"mnist", "celeba"}
    for record in records:
        # reference_count: null -> every image of the test split as configured (MNIST limited to 64;
        # the stand-in's whole 20-image test split)
        assert record["n_reference"] == {"mnist": 64, "celeba": 20}[record["dataset"]], record
        assert record["n_samples"] == N_SAMPLES
    tag = layout.dataset_tag("celeba", ci_config.data.celeba.root)
    assert (REPO / "resources" / "fid" / "mnist-test-n64.npz").is_file()
    assert (REPO / "resources" / "fid" / f"{tag}-test-nall.npz").is_file()


@pytest.mark.slow
def test_every_record_and_job_log_names_its_device(paper_run):
    import torch

    results = paper_run / "results"
    files = list((results / "metrics").rglob("*.json")) + list((results / "sweeps").rglob("criteria.json"))
    assert files
    for path in files:
        data = json.loads(path.read_text())
        for record in data if isinstance(data, list) else [data]:
            assert record["device"] == "cpu" and record["torch"] == torch.__version__, path
            assert "cuda" in record and record["device_name"] and record["host"], path
    from arelbo.core.layout import run_logs

    run_folder = run_logs(paper_run / "logs", NAME, paper_run / "results")
    logs = [
        p
        for p in run_folder.rglob("*.log")
        if p.parent.name not in ("tables", "provision") and "fid" not in p.parts[-2:-1]
    ]
    for rule in ("train", "encode", "estimators", "samples", "metrics", "sweeps"):
        rule_logs = [p for p in logs if p.relative_to(run_folder).parts[0] == rule]
        assert rule_logs, rule
        for log in rule_logs:
            assert "device: cpu" in log.read_text(), log


@pytest.mark.slow
@pytest.mark.e2e  # a workflow run of its own (make test-fast leaves it out)
def test_mnist_jobs_run_while_celeba_is_not_downloaded(tmp_path, ci_config):
    """The paper config before CelebA is downloaded: MNIST jobs run, CelebA jobs fail with what to do."""
    missing = tmp_path / "no-celeba-here"
    overlay = paper_sizes_overlay(tmp_path / "o.yaml", str(missing))
    base = [sys.executable, "-m", "arelbo"]
    shown = subprocess.run([*base, "config", "--config", str(overlay)], cwd=REPO, capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.startswith(f"name: {NAME}"), shown.stderr
    assert "CelebA jobs will fail" in shown.stderr and "datasets=[mnist]" in shown.stderr

    mnist_model = f"{tmp_path}/results/models/mnist/iso_i_arelbo/seed0/model.pt"
    celeba_model = f"{tmp_path}/results/models/celeba/iso_i_arelbo/seed0/model.pt"
    result = snakemake(
        mnist_model,
        celeba_model,
        "--cores",
        "2",
        "--max-threads",
        "1",
        "--keep-going",
        "--configfile",
        str(overlay),
        "--config",
        f"outdir={tmp_path}/results",
        f"logdir={tmp_path}/logs",
        timeout=900,
    )
    assert result.returncode != 0  # the CelebA half fails ...
    assert Path(mnist_model).is_file()  # ... the MNIST half does not
    assert not Path(celeba_model).exists()
    assert "datasets=[mnist]" in result.stderr  # the workflow's warning says how to run MNIST alone
    from arelbo.core.layout import run_logs

    provision_logs = run_logs(tmp_path / "logs", NAME, tmp_path / "results") / "provision"
    failed = "".join(p.read_text() for p in provision_logs.glob("dataset_celeba*.log"))
    assert "does not hold img_align_celeba/" in failed and "datasets=[mnist]" in failed


def test_paper_mnist_overlay_is_the_paper_without_celeba():
    from arelbo.core.config import load_config

    paper = load_config(check_folders=False)
    mnist = load_config(REPO / "config" / "paper-mnist.yaml", check_folders=False)
    assert mnist.datasets == ("mnist",)
    assert {k: v for k, v in mnist.raw.items() if k != "datasets"} == {
        k: v for k, v in paper.raw.items() if k != "datasets"
    }


def test_paper_config_mnist_dry_run_plans_without_celeba(tmp_path):
    # the README's command for the MNIST half (and the before-stop hook's check)
    result = snakemake(
        "-n",
        "--cores",
        "8",
        f"{tmp_path}/out/table3.tex",
        "--config",
        "datasets=[mnist]",
        f"outdir={tmp_path}/out",
        f"logdir={tmp_path}/logs",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "celeba" not in result.stdout.split("Job stats:")[0].lower()


def test_the_gpu_overlay_is_the_paper_on_cuda_in_the_gpu_job_layouts(tmp_path):
    """config/gpu.yaml changes the device to `cuda` (a job that cannot use the GPU stops) and the job
    layouts (batched Section 3, FID, second stages), nothing that changes a result; after the MNIST
    overlay in one `--configfile`, as README shows, the dry run plans the batched rules for MNIST only."""
    from arelbo.core.config import load_config

    paper = load_config(check_folders=False)
    gpu = load_config(REPO / "config" / "gpu.yaml", check_folders=False)
    assert gpu.device == "cuda"
    assert gpu.section3.batched and gpu.fid.batched and gpu.second_stage.batched
    layout_keys = {"device": None, "section3": "batched", "fid": "batched", "second_stage": "batched"}

    def without_layout(raw):
        raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items() if k != "device"}
        for key, field in layout_keys.items():
            if field:
                raw[key].pop(field, None)
        return raw

    assert without_layout(gpu.raw) == without_layout(paper.raw)
    result = snakemake(
        "-n",
        "--cores",
        "8",
        "--configfile",
        str(REPO / "config" / "paper-mnist.yaml"),
        str(REPO / "config" / "gpu.yaml"),
        "--config",
        f"outdir={tmp_path}/out",
        f"logdir={tmp_path}/logs",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    planned = result.stdout.split("Job stats:")[-1]
    assert "celeba" not in result.stdout.split("Job stats:")[0].lower()
    assert "sample_and_score_mnist_with_prior" in planned and "section3_train_table5" in planned, planned
    assert "fit_second_stages_mnist" in planned, planned
