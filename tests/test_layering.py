"""The package's layout is its architecture (docs/architecture.md), checked rather than promised:
the Snakefile imports only the torch-free core, each sub-package imports only the layers below it,
the import paths plugins use still work, and no two public functions share a name."""

from __future__ import annotations

import ast
import collections
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "arelbo"
WORKFLOW_FILES = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]

# What each sub-package may import from arelbo, besides itself.
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "metrics": {"core"},
    "reporting": {"core"},
    "stages": {"core", "models", "metrics", "reporting"},
    "planning": {"core", "models", "metrics", "stages", "reporting"},
}


def _arelbo_imports(source: str) -> set[str]:
    """Every arelbo module a Python source names in an import statement (at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "arelbo":
                found |= {f"arelbo.{a.name}" for a in node.names}
            elif node.module.startswith("arelbo."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("arelbo.")}
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"relative import of {node.module!r}: use absolute arelbo.* imports")
    return found


def _workflow_imports() -> set[str]:
    found = set()
    for path in WORKFLOW_FILES:
        for line in path.read_text().splitlines():
            m = re.match(r"\s*(?:from (arelbo[\w.]*) import ([\w, ]+)|import (arelbo[\w.]*))", line)
            if m and m.group(1):
                base = m.group(1)
                names = [n.strip() for n in m.group(2).split(",")]
                found |= {f"{base}.{n}" if base == "arelbo.core" else base for n in names}
            elif m:
                found.add(m.group(3))
    return found


def test_the_workflow_imports_only_the_core_and_the_core_imports_no_torch():
    modules = _workflow_imports()
    assert modules, "no arelbo import found in the workflow files: the parser above is out of date"
    outside = sorted(m for m in modules if not m.startswith("arelbo.core"))
    assert not outside, f"the Snakefile may import only arelbo.core (torch-free): {outside}"
    core = sorted({f"arelbo.core.{p.stem}" for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__"})
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in sorted(set(core) | modules))
        + "heavy = sorted(m for m in ('torch', 'torchvision') if m in sys.modules)\n"
        + "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_each_sub_package_imports_only_the_layers_below_it():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for module in _arelbo_imports(path.read_text()):
                layer = module.split(".")[1]
                if layer != package and layer not in allowed:
                    wrong.append(f"{path.relative_to(REPO)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_layering_check_sees_a_violation():
    assert _arelbo_imports("def f():\n    from arelbo.stages.train import fit\n") == {"arelbo.stages.train"}
    assert _arelbo_imports("from arelbo import registry, cli\n") == {"arelbo.registry", "arelbo.cli"}
    with pytest.raises(AssertionError, match="relative import"):
        _arelbo_imports("from .train import fit\n")


@pytest.mark.parametrize(
    "public, home",
    [
        ("arelbo.registry", "arelbo.core.registry"),
        ("arelbo.nets", "arelbo.models.nets"),
        ("arelbo.objectives", "arelbo.models.objectives"),
        ("arelbo.estimators", "arelbo.models.estimators"),
    ],
)
def test_the_plugin_import_paths_are_the_modules_themselves(public, home):
    code = (
        f"import importlib, sys\nimport {public} as a\nb = importlib.import_module({home!r})\n"
        "assert a is b, (a, b)\n"
        f"from {public.rsplit('.', 1)[0]} import {public.rsplit('.', 1)[1]} as c\nassert c is b\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_two_public_functions_or_classes_share_a_name():
    homes = collections.defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            # `main` is a module's command-line entry point (`python -m ...`): one meaning everywhere
            if (
                isinstance(node, (ast.FunctionDef, ast.ClassDef))
                and not node.name.startswith("_")
                and node.name != "main"
            ):
                homes[node.name].append(str(path.relative_to(REPO)))
    shared = {name: paths for name, paths in homes.items() if len(paths) > 1}
    assert not shared, shared


def test_the_quick_dag_plans_the_files_it_planned_before_the_move():
    """Moving code must not move a result: the files `make quick`'s DAG plans (every output, under
    its outdir, and every shared resource) equal the list recorded before the package was split
    into sub-packages (tests/data/dag/quick_outputs.tsv; `snakemake --summary` is Snakemake's
    machine-readable listing of a DAG's outputs)."""
    import csv
    import tempfile

    expected = (REPO / "tests" / "data" / "dag" / "quick_outputs.tsv").read_text().split()[1:]
    with tempfile.TemporaryDirectory() as tmp:
        out, logs = f"{tmp}/results", f"{tmp}/logs"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "--summary",
                "--cores",
                "1",
                "--configfile",
                "config/quick.yaml",
                "--config",
                f"outdir={out}",
                f"logdir={logs}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        rows = csv.DictReader(result.stdout.splitlines(), delimiter="\t")
        planned = sorted(r["output_file"].replace(out, "<outdir>") for r in rows)
    assert planned == sorted(expected), sorted(set(planned) ^ set(expected))


def test_make_test_runs_the_style_checks_first():
    """CI runs `make test`: a style error must fail it (ruff lint and format, snakefmt)."""
    dry = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    steps = [line for line in dry.splitlines() if "ruff" in line or "snakefmt" in line or "pytest" in line]
    assert [s.split()[1] if "ruff" in s else s.split()[0].rsplit("/", 1)[-1] for s in steps] == [
        "check",
        "format",
        "snakefmt",
        "python",
    ], steps


def test_commands_that_need_no_torch_start_without_it(tmp_path):
    """Every workflow job starts a Python process; the bookkeeping commands (config, table, claims,
    costs, plot) run without torch, so they start without its import (seconds each on a small CPU)."""
    import json

    record = {"table": 3, "dataset": "mnist", "model": "vae", "seed": 0, "config": "ci", "commit": "abc"}
    record.update(metric="mse", value=1.0)
    (tmp_path / "mse.json").write_text(json.dumps(record))
    calls = [
        ["config"],
        [
            "table",
            "--config",
            "config/ci.yaml",
            "--table",
            "3",
            "--outdir",
            str(tmp_path / "t"),
            str(tmp_path / "mse.json"),
        ],
        ["claims", "--results", str(tmp_path / "none")],
        ["costs", "--logs", str(tmp_path / "none")],
    ]
    code = (
        "import sys\nfrom arelbo.cli import main\n"
        f"for argv in {calls!r}:\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "    assert 'torch' not in sys.modules, ('torch imported by', argv)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_installed_packages_carry_their_bytecode():
    """make's bootstrap compiles what it installs (uv --compile-bytecode; uv writes no .pyc by default).
    Without it, where PYTHONDONTWRITEBYTECODE is set, every process compiles torch, torchvision and
    Snakemake from source: `import torch` took 5.1 s instead of 2.6 s, torchvision 11.9 s instead of 4.4 s
    on the 2-core machine, in each of a workflow's jobs."""
    import importlib.util

    missing = []
    for package, modules in {
        "torch": ("__init__.py", "_dynamo/symbolic_convert.py", "nn/functional.py"),
        "torchvision": ("__init__.py", "models/inception.py"),
        "snakemake": ("__init__.py", "workflow.py"),
        "pytorch_fid": ("inception.py",),
        "sklearn": ("mixture/_gaussian_mixture.py",),
    }.items():
        folder = Path(importlib.util.find_spec(package).origin).parent
        for module in modules:
            source = folder / module
            assert source.is_file(), source
            if not Path(importlib.util.cache_from_source(str(source))).is_file():
                missing.append(str(source))
    assert not missing, (
        f"no bytecode for {missing}: install with `uv pip install --compile-bytecode` (as `make` does; "
        "rebuild with `rm .venv/.arelbo-installed && make provision`) or run `python -m compileall` on site-packages"
    )
