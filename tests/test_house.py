"""The repository stands on its own: its documents cite only what a user can open (the design
document, the paper), their cross-references resolve, and the README indexes every document."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Built from pieces so that this file does not match itself.
INTERNAL_SPEC = re.compile(r"\b" + "SP" + r"EC\b")
ISSUE_NUMBER = re.compile(r"\b" + "iss" + r"ues? ?#?\d+", re.IGNORECASE)
# Words about the circumstances the project was built in (a machine on loan, a timed window on it, other
# processes of its builders, rounds of work) rather than a user's: a user has a GPU node for a short
# time, without internet. Built from pieces, as above.
HOW_IT_WAS_BUILT = re.compile(
    "|".join(
        (
            r"\b" + "lea" + r"se\b",
            r"\b" + "le" + r"nt\b",
            "device" + " tool",
            "device" + " slot",
            r"minute " + "slot",
            "other " + "agents",
            r"(previous|earlier|this) " + "ses" + r"sion\b",
            "the " + "iss" + "ue's",
        )
    ),
    re.IGNORECASE,
)


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    files = []
    for name in names:
        path = REPO / name
        if path.is_file() and path.suffix not in {".png", ".jpg", ".npy", ".npz", ".pt", ".pth"}:
            files.append(path)
    return files


def _hits(pattern: re.Pattern, files) -> list[str]:
    hits = []
    for path in files:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    return hits


def test_no_tracked_file_cites_a_document_users_cannot_open():
    files = _tracked_text_files()
    assert len(files) > 50
    assert not _hits(INTERNAL_SPEC, files), "cite docs/design.md instead:\n" + "\n".join(_hits(INTERNAL_SPEC, files))
    assert not _hits(ISSUE_NUMBER, files), "say what and why instead:\n" + "\n".join(_hits(ISSUE_NUMBER, files))


def test_the_project_speaks_of_the_project_not_of_how_it_was_built():
    hits = [hit for hit in _hits(HOW_IT_WAS_BUILT, _tracked_text_files()) if not hit.startswith("requirements.lock")]
    assert not hits, "say what a user has (a GPU node for a short time, without internet):\n" + "\n".join(hits)


def test_the_citation_checks_see_a_citation():
    assert HOW_IT_WAS_BUILT.search("one " + "lea" + "se of 10 minutes")
    assert HOW_IT_WAS_BUILT.search("a GPU " + "le" + "nt")
    assert not HOW_IT_WAS_BUILT.search("please release the node; silent failures")
    assert INTERNAL_SPEC.search("as " + "SP" + "EC §3 says") and not INTERNAL_SPEC.search("SPECIAL spectrum")
    assert ISSUE_NUMBER.search("(" + "iss" + "ue 14)") and ISSUE_NUMBER.search("Iss" + "ues #3")
    assert not ISSUE_NUMBER.search("an issue with 3 files")


def _headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in doc.read_text().splitlines() if line.startswith("#")]


def test_every_cross_reference_to_a_document_resolves():
    """`docs/<name>.md §N` names a numbered section of it; `docs/<name>.md, "Title"` a heading that starts so."""
    section = re.compile(r"(docs/[\w.-]+\.md) §(\d+)")
    titled = re.compile(r"(docs/[\w.-]+\.md),? \"([^\"]+)\"")
    broken = []
    for path in _tracked_text_files():
        text = path.read_text(errors="replace")
        for doc, number in section.findall(text):
            target = REPO / doc
            if not target.is_file() or not any(h.startswith(f"{number}. ") for h in _headings(target)):
                broken.append(f"{path.relative_to(REPO)}: {doc} §{number}")
        for doc, title in titled.findall(" ".join(text.split())):
            target = REPO / doc
            if not target.is_file() or not any(h.startswith(title) for h in _headings(target)):
                broken.append(f'{path.relative_to(REPO)}: {doc}, "{title}"')
        for doc in set(re.findall(r"\bdocs/[\w.-]+\.md\b", text)):
            if not (REPO / doc).is_file():
                broken.append(f"{path.relative_to(REPO)}: {doc} does not exist")
    assert not broken, "\n".join(sorted(set(broken)))


def test_the_readme_indexes_every_document():
    readme = (REPO / "README.md").read_text()
    missing = [f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md")) if f"docs/{p.name}" not in readme]
    missing += [name for name in ("CONTRIBUTING.md",) if f"`{name}`" not in readme]
    assert not missing, f"README.md's documentation index lacks {missing}"


def test_make_test_fast_is_the_suite_without_its_end_to_end_runs():
    """CONTRIBUTING.md: `make test-fast` = `pytest -m "not e2e"`, lint first like `make test`; the marker
    is registered and said to be what the doc says; CI (`make test`) deselects nothing."""
    import tomllib

    fast = subprocess.run(["make", "-n", "test-fast"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    full = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    (fast_pytest,) = [line for line in fast.splitlines() if "pytest" in line]
    (full_pytest,) = [line for line in full.splitlines() if "pytest" in line]
    full_options = full_pytest.split(" pytest", 1)[1]
    assert '-m "not e2e"' in fast_pytest and " -m " not in full_options and " -k " not in full_options
    assert [line for line in fast.splitlines() if "ruff" in line or "snakefmt" in line] == [
        line for line in full.splitlines() if "ruff" in line or "snakefmt" in line
    ]
    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("e2e:") and "make test-fast" in m for m in markers)
    contributing = (REPO / "CONTRIBUTING.md").read_text()
    assert "make test-fast" in contributing and '`pytest -m "not e2e"`' in contributing


def test_tests_that_share_a_run_go_to_one_worker(tmp_path):
    """`make test` runs pytest-xdist with `--dist loadgroup`: the readers of a shared end-to-end run
    (and of a module fixture) carry one `xdist_group` (tests/conftest.py) and must run on one worker,
    or each worker would run its own copy of a 5-minute run. Some pytest and pytest-xdist releases
    together drop the groups without a word (pytest 9.2 with pytest-xdist 3.8): this catches that."""
    import sys

    for name in ("test_a.py", "test_b.py"):  # one group across two files, as e2e_run's readers are
        (tmp_path / name).write_text(
            "import os, pytest\n"
            "@pytest.mark.xdist_group('shared')\n"
            "@pytest.mark.parametrize('i', range(6))\n"
            "def test_grouped(i, tmp_path_factory):\n"
            f"    open({str(tmp_path / 'workers')!r}, 'a').write(os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n"
        )
    make = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    (line,) = [line for line in make.splitlines() if " pytest " in line]
    options = line.split(" pytest ", 1)[1].split()
    assert "loadgroup" in options and "-n" in options
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *options, "--rootdir", str(tmp_path), "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    workers = (tmp_path / "workers").read_text().split()
    assert len(workers) == 12 and len(set(workers)) == 1, f"the group ran on {sorted(set(workers))}"


def test_make_installs_the_torch_build_torch_backend_names(tmp_path):
    """`make quick TORCH_BACKEND=cu126` (or cpu, auto, ...) hands the build to uv's --torch-backend at
    the locked version; without it the install line is today's; switching builds in an existing .venv
    reinstalls torch and torchvision (either build meets the lock, so uv would keep the old one).
    Only the plumbing is tested: PyTorch's index is not reachable from CI."""

    def install_line(venv, *variables):
        out = subprocess.run(
            ["make", "-n", "-B", "provision", f"VENV={venv}", *variables],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (line,) = [line for line in out.splitlines() if "uv pip install" in line]
        return line.split()

    fresh, used = tmp_path / "fresh", tmp_path / "used"
    used.mkdir()
    (used / ".arelbo-installed").touch()  # a .venv bootstrapped with PyPI's build
    plain = install_line(fresh)
    assert not any(word.startswith(("--torch-backend", "--reinstall")) for word in plain)
    assert install_line(used) == [word.replace(str(fresh), str(used)) for word in plain]
    cuda12 = install_line(fresh, "TORCH_BACKEND=cu126")
    assert cuda12[cuda12.index("--torch-backend") + 1] == "cu126" and "--reinstall-package" not in cuda12
    assert "--constraint" in cuda12 and "requirements.lock" in cuda12  # still the locked versions
    switched = install_line(used, "TORCH_BACKEND=cpu")
    assert switched[switched.index("--torch-backend") + 1] == "cpu"
    assert {switched[i + 1] for i, w in enumerate(switched) if w == "--reinstall-package"} == {"torch", "torchvision"}
    # .venv remembers the build: a later plain `make` keeps it; `TORCH_BACKEND=` goes back to PyPI's
    (used / ".arelbo-installed").rename(used / ".arelbo-installed-torch-cpu")
    (used / ".torch-backend").write_text("cpu\n")
    kept = install_line(used)
    assert kept[kept.index("--torch-backend") + 1] == "cpu" and "--reinstall-package" not in kept
    back = install_line(used, "TORCH_BACKEND=")
    assert "--torch-backend" not in back and "--reinstall-package" in back
    make = subprocess.run(
        ["make", "-n", "-B", "provision", f"VENV={used}", "TORCH_BACKEND=cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"touch {used}/.arelbo-installed-torch-cpu" in make and f'echo "cpu" > {used}/.torch-backend' in make


def test_each_config_default_has_one_home():
    """docs/design.md §10: a setting config/config.yaml holds has no dataclass default, and a dataclass
    default exists only for a setting config.yaml does not hold; objective hyper-parameters live in
    the registry (config.yaml's `hparams` holds overrides only)."""
    import dataclasses
    import typing

    import yaml

    from arelbo.core import config

    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert base["hparams"] == {}, "the models' hyper-parameters live in arelbo/core/registry.py"
    twice, missing = [], []

    def walk(cls, node, where):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "raw":
                continue
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            key = f"{where}{f.name}"
            if f.name in node:
                if has_default:
                    twice.append(key)
                sub = [h for h in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(h)]
                if sub and isinstance(node[f.name], dict):
                    walk(sub[0], node[f.name], key + ".")
            elif not has_default:
                missing.append(key)

    walk(config.Config, base, "")
    assert not twice, f"defined both in config/config.yaml and as a dataclass default: {twice}"
    assert not missing, f"neither in config/config.yaml nor with a default: {missing}"
    # the walk reaches nested sections (a check that looks at nothing would pass)
    assert "second_stage.epochs" not in twice and config.SecondStageSettings.__dataclass_fields__["epochs"]


def test_a_config_missing_a_base_key_is_named():
    import pytest
    import yaml

    from arelbo.core.config import ConfigError, from_dict

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    del raw["fid"]["n_samples"]
    with pytest.raises(ConfigError, match="n_samples"):
        from_dict(raw, check_folders=False)


def test_the_readmes_output_tree_is_the_layouts():
    """Every kind of file `arelbo.core.layout` puts below an outdir stands in README's tree, under the
    folder the layout gives it."""
    from arelbo.core import layout

    readme = (REPO / "README.md").read_text()
    tree = readme[readme.index("## Where results land") :]
    tree = tree[tree.index("```") : tree.index("```", tree.index("```") + 3)]
    cell = ("{dataset}", "{model}", "{seed}")
    paths = [
        layout.model_file("", *cell),
        layout.train_log("", *cell),
        layout.latents_file("", *cell),
        layout.estimator_path("", *cell, "prior"),
        layout.samples_path("", *cell, "{sampler}"),
        layout.metric_path("", *cell, "mse"),
        layout.table_tex("", 3),
        layout.table_csv("", "{N}", "tidy"),
        layout.figure_path("", "figure{1,2,3}"),
        layout.claims_path("", "csv"),
        layout.costs_path(""),
        layout.user_config(""),
    ]
    for path in paths:
        if str(path.parent) != ".":
            assert f"{path.parent}/" in tree, f"README's output tree lacks the folder of {path}"
        # the file by its name, or by its stem where the tree lists a family of them (`mse`, `prior`)
        assert path.name in tree or path.stem in tree, f"README's output tree lacks {path}"


def _documents() -> list[Path]:
    return [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_statement_of_the_checkpoint_cadence_is_the_configs():
    import yaml

    cadence = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["train"]["checkpoint"]
    stated = [
        (path.name, int(m[1]), int(m[2]))
        for path in [*_documents(), REPO / "config" / "config.yaml"]
        for m in re.finditer(r"every (\d+) epochs or (\d+) minutes", path.read_text())
    ]
    assert len(stated) >= 3
    for name, epochs, minutes in stated:
        assert (epochs, minutes) == (cadence["every_epochs"], cadence["every_minutes"]), name


def test_every_statement_of_the_gpu_slots_is_the_workflows():
    """One card, GPU_SLOTS slots (workflow/rules/common.smk): the profile, the cost row and the docs say
    the same number."""
    slots = int(re.search(r"^GPU_SLOTS = (\d+)", (REPO / "workflow/rules/common.smk").read_text(), re.M)[1])
    texts = {
        path.name: path.read_text()
        for path in [*_documents(), REPO / "profiles/gpu-workstation/config.yaml", REPO / "arelbo/reference/costs.yaml"]
    }
    pattern = re.compile(r"(\d+) `?gpu_slots`?|pool of (\d+) slots|gpu_slots[=:] ?(\d+)")
    stated = [
        (name, int(next(g for g in m.groups() if g))) for name, text in texts.items() for m in pattern.finditer(text)
    ]
    assert len(stated) >= 4
    assert all(n == slots for _, n in stated), stated


def test_design_states_the_value_tolerances_of_the_claims_file():
    """The tolerances live in arelbo/reference/claims.yaml; docs/design.md §8 states them (with why)
    and must say the same numbers."""
    import yaml

    tolerances = yaml.safe_load((REPO / "arelbo/reference/claims.yaml").read_text())["value_tolerances"]
    design = " ".join((REPO / "docs/design.md").read_text().split())
    stated = {
        "MSE": tolerances[3]["mse"],
        "FID": tolerances[3]["fid"],
        "Section 3 criteria (ELS, gaps, KL, MSE, σz²)": tolerances[1]["els"],
    }
    for what, value in stated.items():
        assert f"{what} ±{round(value * 100)} %" in design, what
    assert {v for table in (1, 5) for v in tolerances[table].values()} == {tolerances[1]["els"]}
    assert tolerances[4]["fid"] == tolerances[3]["fid"]


def test_the_readme_is_a_users_first_page():
    """The two commands, what quick decides, the paper configuration, where results land, links: the
    rest lives in docs/ (running.md, cluster.md, design.md, architecture.md)."""
    assert len((REPO / "README.md").read_text().splitlines()) <= 200
