"""Bad input ends in one clear message before any work: exit 2 from `arelbo`, a WorkflowError from
Snakemake, never a Python traceback. And `reduced` follows from a config's sizes, not only its flag.
(docs/reliability.md lists each case.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arelbo.core.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def assert_one_clear_error(result: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> None:
    said = result.stderr + result.stdout  # Snakemake reports some errors on stdout
    assert result.returncode == code, (result.returncode, said[-3000:])
    assert "Traceback" not in said, said[-3000:]
    for fragment in fragments:
        assert fragment in said, (fragment, said[-3000:])


@pytest.fixture
def a_file(tmp_path) -> Path:
    """A regular file: a path below it cannot be a folder, even for root (who ignores permission bits)."""
    path = tmp_path / "a-file"
    path.write_text("")
    return path


def test_a_fixture_of_fewer_than_one_image_is_refused_up_front(tmp_path):
    result = run("-m", "arelbo", "fixture", "celeba", str(tmp_path / "standin"), "--n", "-5")
    assert_one_clear_error(result, "argument --n", "-5 is not a positive whole number")
    assert not (tmp_path / "standin").exists()


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_an_unwritable_outdir_is_one_clear_error_for_arelbo_and_a_dry_run(tmp_path, a_file, where):
    outdir = str(a_file / "results") if where == "under-a-file" else "/proc/arelbo-results"
    with pytest.raises(ConfigError, match=r"outdir: .* cannot be written"):
        load_config("config/ci.yaml", overrides={"outdir": outdir}, check_folders=False)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"outdir": outdir}))
    assert_one_clear_error(
        run("-m", "arelbo", "config", "--configfile", "config/ci.yaml", str(overlay)), "outdir:", "cannot be written"
    )
    dry = run("-m", "snakemake", "-n", "--configfile", "config/ci.yaml", "--config", f"outdir={outdir}")
    assert_one_clear_error(dry, "WorkflowError", "outdir:", "cannot be written", code=1)
    assert (dry.stderr + dry.stdout).count("cannot be written") == 1


def test_nested_config_values_given_as_strings_say_why():
    """`snakemake --config 'train={mnist: {epochs: 5}}'` hands '5' over as a string."""
    dry = run("-m", "snakemake", "-n", "--configfile", "config/ci.yaml", "--config", "train={mnist: {epochs: 5}}")
    assert_one_clear_error(dry, "'5' is not of type 'integer'", "passes nested values as strings", code=1)
    # a string that is no number is just wrong: no hint about --config
    with pytest.raises(ConfigError) as error:
        load_config("config/ci.yaml", overrides={"train": {"mnist": {"epochs": "five"}}}, check_folders=False)
    assert "not of type 'integer'" in str(error.value) and "--configfile" not in str(error.value)


def test_an_unknown_model_is_refused_before_torch_is_imported(tmp_path):
    probe = (
        "import sys\n"
        "from arelbo.cli import main\n"
        "try:\n"
        "    code = main(sys.argv[1:])\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "print('torch-imported' if 'torch' in sys.modules else 'no-torch', code)\n"
    )
    args = ["--config", "config/ci.yaml", "--dataset", "mnist", "--model", "vea", "--out", str(tmp_path / "out")]
    result = run("-c", probe, "train", *args)
    assert result.stdout.split() == ["no-torch", "2"], (result.stdout, result.stderr[-2000:])
    assert "unknown model 'vea'" in result.stderr and "iso_i_arelbo" in result.stderr
    assert "device:" not in result.stderr  # no device picked either


def test_a_missing_benchmark_folder_is_a_usage_error(tmp_path):
    result = run("-m", "arelbo", "costs", "--logs", str(tmp_path / "nope"))
    assert_one_clear_error(result, "arelbo costs: error: no benchmark folder")


# ---------------------------------------------------------------------------- "reduced" is derived


def _judged_sigma_x2(cfg, results: Path):
    """The value claim on Iso-I AR-ELBO's MNIST σx² (paper: 0.0056), judged from a record of
    exactly the paper's value written by `cfg` through the table job's path."""
    import dataclasses

    from arelbo.reporting.claims import judge, read_tidy
    from arelbo.reporting.tables import tidy_from_records, write_table_outputs
    from arelbo.stages.evaluate import _record

    cfg = dataclasses.replace(cfg, outdir=str(results))
    record = _record(cfg, "mnist", "iso_i_arelbo", 0, "sigma_x2", 0.0056, provenance={"commit": "c0"}, uncertainty=1e-5)
    write_table_outputs(tidy_from_records([record]), 3, results, config_name=cfg.name, reduced=cfg.reduced)
    verdicts = judge(read_tidy(results))
    return verdicts[verdicts["id"] == "sigma-x2-mnist"].iloc[0]


def test_a_config_below_the_papers_sizes_is_reduced_whatever_its_flag(tmp_path):
    small = load_config(
        overrides={"reduced": False, "train": {"mnist": {"epochs": 5}}, "fid": {"n_samples": 500}},
        check_folders=False,
    )
    assert small.reduced and small.raw["reduced"] is True
    assert small.reduced_because == ("train.mnist.epochs=5 (paper: 100)", "fid.n_samples=500 (paper: 10000)")
    verdict = _judged_sigma_x2(small, tmp_path / "small")
    assert verdict["verdict"] == "NOT RUN"
    assert "train.mnist.epochs=5 (paper: 100)" in verdict["evidence"]
    assert "fid.n_samples=500 (paper: 10000)" in verdict["evidence"]


def test_the_paper_config_is_not_reduced_and_its_values_are_judged(tmp_path):
    paper = load_config(check_folders=False)
    assert not paper.reduced and paper.reduced_because == ()
    assert not load_config("config/paper-mnist.yaml", "config/gpu.yaml", check_folders=False).reduced
    assert _judged_sigma_x2(paper, tmp_path / "paper")["verdict"] == "PASS"


def test_the_flag_can_only_make_a_run_more_conservative(tmp_path):
    flagged = load_config(overrides={"reduced": True}, check_folders=False)
    assert flagged.reduced and flagged.reduced_because == ("the config says `reduced: true`",)
    assert _judged_sigma_x2(flagged, tmp_path / "flagged")["verdict"] == "NOT RUN"


def test_a_dataset_the_config_does_not_run_does_not_make_it_reduced():
    mnist_only = load_config(
        "config/paper-mnist.yaml", overrides={"data": {"celeba": {"limit": {"train": 10}}}}, check_folders=False
    )
    assert not mnist_only.reduced


# ---------------------------------------------------------------------------- smaller cases


def test_a_new_fid_reference_in_a_read_only_folder_is_refused_before_the_inception_pass(tmp_path, a_file):
    from arelbo.core.runtime import NotWritable
    from arelbo.metrics import fid

    def no_images():
        raise AssertionError("images were loaded for a reference that cannot be written")

    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not read: the write check comes first")
    with pytest.raises(NotWritable, match="cannot write"):
        fid.reference_stats(
            a_file / "fid" / "ref.npz",
            no_images,
            dataset="mnist",
            split="test",
            count=10,
            weights_path=weights,
            model=object(),
            device="cpu",
        )


def test_a_dry_run_needing_new_shared_files_in_an_unwritable_resources_says_so(a_file):
    dry = run("-m", "snakemake", "-n", "--configfile", "config/ci.yaml", "--config", f"resources={a_file}/res")
    assert_one_clear_error(dry, "WorkflowError", "resources:", "cannot be written", "needs new shared files", code=1)


def test_the_snakefile_finds_its_base_config_from_another_directory(tmp_path):
    dry = run(
        "-m",
        "snakemake",
        "-n",
        "-s",
        str(REPO / "Snakefile"),
        "--configfile",
        str(REPO / "config" / "ci.yaml"),
        "--config",
        f"outdir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert dry.returncode == 0, (dry.stderr + dry.stdout)[-3000:]


def test_a_second_configfile_flag_is_refused_where_snakemake_would_drop_the_first(tmp_path):
    """`--configfile A --configfile B`: Snakemake reads B alone; arelbo refuses, naming the spelling
    both read alike, instead of merging a config the workflow would never run."""
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(yaml.safe_dump({"outdir": str(tmp_path / "from-first")}))
    second.write_text(yaml.safe_dump({"name": "second"}))
    dry = run("-m", "snakemake", "-n", "--cores", "1", "--configfile", str(first), "--configfile", str(second))
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "from-first" not in dry.stdout + dry.stderr  # the premise: Snakemake dropped the first file
    refused = run("-m", "arelbo", "config", "--configfile", str(first), "--configfile", str(second))
    assert_one_clear_error(refused, "--configfile is given more than once", f"--configfile {first} {second}")
    both = run("-m", "arelbo", "config", "--configfile", str(first), str(second))
    assert both.returncode == 0 and "from-first" in both.stdout and "name: second" in both.stdout
