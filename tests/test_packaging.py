"""The wheel holds the whole package: every module, every reference file the code reads (tables,
claims.yaml, costs.yaml) and the licence. Editable installs (make quick, make test) read the source
tree and never notice a file the wheel leaves out, so the wheel is built and opened here."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of what the wheel is made of, so that setuptools' build/ and egg-info land
    in tmp_path, not in the working tree; offline and without build isolation (the setuptools that
    `make` installs builds it: nothing is downloaded)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "arelbo", src / "arelbo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "dist"
    uv = Path(sys.executable).with_name("uv")  # `make` installs uv into .venv
    if uv.exists():
        command = [str(uv), "build", "--wheel", "--no-build-isolation", "--offline", "--python", sys.executable]
        command += ["--out-dir", str(out)]
    else:
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        command += ["--wheel-dir", str(out), "."]
    result = subprocess.run(command, cwd=src, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    (wheel,) = out.glob("arelbo-*.whl")
    return wheel


def test_the_wheel_ships_every_module_every_reference_file_and_the_licence(tmp_path):
    wheel = zipfile.ZipFile(_build_wheel(tmp_path))
    names = set(wheel.namelist())
    package = REPO / "arelbo"
    wanted = {p.relative_to(REPO).as_posix() for p in (package / "reference").rglob("*") if p.is_file()}
    assert {"arelbo/reference/claims.yaml", "arelbo/reference/costs.yaml"} <= wanted
    wanted |= {p.relative_to(REPO).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(wanted - names)
    assert not missing, f"the wheel lacks {missing}: list them under [tool.setuptools.package-data] in pyproject.toml"
    licences = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert licences, "the wheel's dist-info has no LICENSE: name it in pyproject.toml's `license-files`"
    assert wheel.read(licences[0]).decode() == (REPO / "LICENSE").read_text()
