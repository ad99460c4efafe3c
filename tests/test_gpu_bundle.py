"""The GPU check's offline bundle (gpu/check.sh): pieces carried one call at a time are staged,
verified (sha256 of every piece and of every unpacked file) and installed; a missing or corrupt piece
stops the check with a message that names it and the fix, before anything is installed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bundle(tmp_path: Path) -> Path:
    """A bundle packed by gpu/bundle.sh --pack (its manifest, archive and pieces) from a small payload
    laid out as the real one: wheels/ (none here), resources/ with a data file and the weights."""
    payload = tmp_path / "payload"
    for rel, size in (("resources/mnist/raw/train-labels-idx1-ubyte", 3000), ("resources/inception/weights.pth", 9000)):
        (payload / rel).parent.mkdir(parents=True, exist_ok=True)
        (payload / rel).write_bytes(os.urandom(size))
    (payload / "wheels").mkdir()
    bundle = tmp_path / "bundle"
    packed = subprocess.run(
        ["bash", "gpu/bundle.sh", "--pack", str(payload), "--piece-size", "6K", "--out", str(bundle)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert packed.returncode == 0, packed.stderr
    assert len(list(bundle.iterdir())) >= 2  # 12 KB of random data in 6 KB pieces
    return bundle


def _check(step: str, tmp_path: Path, carried: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ARELBO_GPU_STAGE": str(tmp_path / "stage"),
        "ARELBO_GPU_BUNDLE": str(carried),
        "ARELBO_GPU_RESOURCES": str(tmp_path / "resources"),
        "OUT": str(tmp_path / "out"),
    }
    return subprocess.run(["bash", "gpu/check.sh", step], cwd=REPO, env=env, capture_output=True, text=True)


def _carry(bundle: Path, tmp_path: Path, *parts: str) -> Path:
    """What one device call carries: only the named part folders."""
    import shutil

    carried = tmp_path / f"carried-{'-'.join(parts)}"
    shutil.rmtree(carried, ignore_errors=True)  # each call's carry is made anew
    for part in parts:
        shutil.copytree(bundle / part, carried / part)
    return carried


def test_pieces_carried_in_separate_calls_are_staged_verified_and_installed(tmp_path):
    bundle = _bundle(tmp_path)
    first = _check("stage", tmp_path, _carry(bundle, tmp_path, "part-00"))
    assert first.returncode == 0 and "still missing: bundle.tgz.01" in first.stdout, first.stderr
    early = _check("setup", tmp_path, _carry(bundle, tmp_path, "part-00"))
    assert early.returncode == 2 and "not staged yet: bundle.tgz.01" in early.stderr
    assert not (tmp_path / "resources").exists()  # nothing installed from part of a bundle

    rest = sorted(p.name for p in bundle.iterdir() if p.name != "part-00")
    done = _check("setup", tmp_path, _carry(bundle, tmp_path, *rest))
    assert done.returncode == 0, done.stderr
    unpacked = tmp_path / "payload" / "resources"
    for rel in ("mnist/raw/train-labels-idx1-ubyte", "inception/weights.pth"):
        assert (tmp_path / "resources" / rel).read_bytes() == (unpacked / rel).read_bytes()
    assert "# GPU check" in (tmp_path / "out" / "record.md").read_text()


def test_a_corrupt_piece_stops_the_check_before_anything_is_installed(tmp_path):
    bundle = _bundle(tmp_path)
    piece = bundle / "part-01" / "bundle.tgz.01"  # a piece in the middle of the archive
    data = bytearray(piece.read_bytes())
    data[len(data) // 2] ^= 0xFF
    piece.write_bytes(bytes(data))
    result = _check("setup", tmp_path, bundle)
    assert result.returncode == 2 and "corrupt" in result.stderr and "make gpu-bundle" in result.stderr
    assert not (tmp_path / "resources").exists()


def test_no_bundle_at_all_says_how_to_make_one(tmp_path):
    result = _check("stage", tmp_path, tmp_path / "nothing")
    assert result.returncode == 2 and "make gpu-bundle" in result.stderr


@pytest.mark.parametrize("step", ["", "bogus"])
def test_an_unknown_step_prints_the_usage(tmp_path, step):
    result = _check(step, tmp_path, tmp_path / "nothing")
    assert result.returncode == 2 and "usage: bash gpu/check.sh" in result.stderr


def test_the_gpu_checks_limits_fit_15_minutes_as_its_doc_says():
    """docs/gpu-check.md's budget table uses gpu/check.sh's own limits, adds up to its total, and the
    total leaves at least a minute of the 15 minutes; each command's time limit covers its parts and
    stays within 10 minutes; the step whose result matters most runs first."""
    import re

    script = (REPO / "gpu" / "check.sh").read_text()
    doc = (REPO / "docs" / "gpu-check.md").read_text()

    def default(name: str) -> int:
        return int(re.search(rf"^{name}=(?:\$\{{\w+:-)?(\d+)", script, re.M).group(1))

    table = doc[doc.index("### Fitting 15 minutes") :]
    rows = dict(re.findall(r"^\| (.+?) \| \**(\d+)\** \|$", table, re.M))
    parts = {label: int(seconds) for label, seconds in rows.items() if "total" not in label}
    total = int(next(seconds for label, seconds in rows.items() if "total" in label))
    assert sum(parts.values()) == total <= 15 * 60 - 60
    by_name = {key: next(v for label, v in parts.items() if key in label) for key in ("TESTS_BUDGET", "TABLES_TIMEOUT")}
    assert by_name == {"TESTS_BUDGET": default("TESTS_BUDGET"), "TABLES_TIMEOUT": default("TABLES_TIMEOUT")}
    assert next(v for label, v in parts.items() if "PLAN_TIMEOUT" in label) == default("PLAN_TIMEOUT")

    calls = {int(n): int(t) for n, t in re.findall(r"^\| (\d) \| [^|]+ \| [^|]+ \| (\d+) \|", doc, re.M)}
    call_parts = {n: sum(v for label, v in parts.items() if label.startswith(f"command {n}:")) for n in calls}
    assert calls.keys() == {1, 2, 3} and all(call_parts[n] <= calls[n] <= 600 for n in calls), (calls, call_parts)

    steps = re.findall(r'^  "([\w-]+) (\d+) ', script, re.M)
    assert [label for label, _ in steps[:2]] == ["pytest-gpu", "bench-tf32_precision"]
    assert sum(int(limit) for _, limit in steps[:2]) <= default("TESTS_BUDGET")  # the first two always run


def _rehearse(tmp_path, **env) -> tuple[subprocess.CompletedProcess, str]:
    environ = {**os.environ, "OUT": str(tmp_path / "out"), "ARELBO_GPU_STAGE": str(tmp_path / "stage"), **env}
    done = subprocess.run(
        ["bash", "gpu/check.sh", "rehearse"], cwd=REPO, env=environ, capture_output=True, text=True, timeout=3600
    )
    record = tmp_path / "out" / "record.md"
    return done, record.read_text() if record.is_file() else ""


@pytest.mark.slow
@pytest.mark.e2e  # the GPU check's whole DAG, at tiny sizes on the CPU
def test_the_gpu_check_rehearses_every_step_on_the_cpu_and_records_them_all(tmp_path):
    """`bash gpu/check.sh rehearse` is the check itself (its steps, its record) at tiny sizes on this
    machine: every step runs and succeeds, and the record is complete, the costs table included."""
    done, record = _rehearse(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:] + record[-3000:]
    script = (REPO / "gpu" / "check.sh").read_text()
    for label in re.findall(r'^  "([\w-]+) \d+ ', script, re.M) + ["snakemake", "costs", "claims", "plan"]:
        assert re.search(rf"^- {label}: \d+ s, exit 0$", record, re.M), label
    assert "Every step succeeded." in record and "did not succeed" not in record
    costs = (tmp_path / "out" / "costs.csv").read_text().splitlines()
    assert costs[0].startswith("stage,job") and len(costs) > 10  # one row per job of the DAG
    assert "Table 3" in record and "Claims" in record and (tmp_path / "out" / "logs.tgz").stat().st_size > 0


def test_a_step_that_fails_is_named_and_fails_the_check(tmp_path):
    """No step's failure is swallowed: the DAG stopped at a 1-second limit is recorded with why, the
    steps after it that find nothing to read fail too, and the check exits non-zero."""
    done, record = _rehearse(tmp_path, ARELBO_GPU_TESTS_BUDGET="0", ARELBO_GPU_TABLES_TIMEOUT="1")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "snakemake did not succeed**: stopped at its time limit" in record
    assert "Steps that did not succeed:" in record and "a step did not succeed: snakemake" in done.stderr
    assert "|| true" not in (REPO / "gpu" / "check.sh").read_text()
