"""Config values in shell commands, in the HTML report and in the log folder's name: a folder or a
description can neither run a command nor carry markup, and two runs never share job logs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from arelbo.core import layout
from arelbo.core.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "`click <javascript:alert(1)>`_ </script><img src=x onerror=alert(1)> :raw-html:`<b>x</b>`"


def snakemake(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def shell_commands(output: str) -> list[str]:
    """The shell commands a `snakemake -n -p` printed, one per job."""
    return re.findall(r"^Shell command: (.+)$", output, re.M) or [
        line.strip() for line in output.splitlines() if " -m arelbo " in line or line.strip().startswith("cp ")
    ]


@pytest.mark.parametrize("key", ["outdir", "logdir", "resources"])
@pytest.mark.parametrize("payload", ["$(touch {marker})", "`touch {marker}`"])
def test_a_command_in_a_folder_value_never_runs_and_is_refused_by_name(tmp_path, key, payload):
    marker = tmp_path / "MARKER"
    value = f"{tmp_path}/inj{payload.format(marker=marker)}"
    result = snakemake(
        "-n", "-p", "--cores", "1", "--configfile", "config/ci.yaml", "--config", f"outdir={tmp_path}/out",
        f"logdir={tmp_path}/logs", f"resources={tmp_path}/res", f"{key}={value}",
    )  # fmt: skip
    said = result.stdout + result.stderr
    assert result.returncode != 0 and not marker.exists(), said[-2000:]
    assert f"- {key}: {value!r} holds" in said and "e.g. --config" in said, said[-2000:]


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"name": ".."}, "name: '..' holds a '..' component"),
        ({"outdir": "/"}, "outdir: '/' holds the filesystem root"),
        ({"logdir": "logs/../.."}, "logdir: 'logs/../..' holds a '..' component"),
        ({"resources": "res\nrm -rf x"}, "resources: 'res\\nrm -rf x' holds control characters U+000A"),
        ({"outdir": "results/</script>"}, "the HTML report embeds paths"),
        ({"outdir": "results/{x}"}, "Snakemake reads braces as a wildcard"),
    ],
)
def test_unsafe_folder_values_are_refused_with_the_fix(overrides, said):
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_config("config/ci.yaml", overrides=overrides, check_folders=False)
    # spaces and non-ASCII letters are folder names like any other
    assert load_config("config/ci.yaml", overrides={"outdir": "results/my run ü"}, check_folders=False)


@pytest.mark.e2e
def test_folders_with_spaces_and_non_ascii_letters_run_real_jobs(tmp_path):
    """The user-facing config copy (a `cp`) and a dataset cache (`python -m arelbo provision data` on
    a generated CelebA stand-in) with every folder of the run below a name holding spaces, `ü`, `&`
    and parentheses: each path reaches its job as one argument."""
    base = tmp_path / "my run ü & co (1)"
    overlay = tmp_path / "overlay.yaml"
    folders = {"outdir": base / "out", "resources": base / "res", "logdir": base / "logs"}
    overlay.write_text(
        yaml.safe_dump(
            {
                **{k: str(v) for k, v in folders.items()},
                "datasets": ["celeba"],
                "data": {"celeba": {"root": str(base / "celeba")}},
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    cfg = load_config("config/ci.yaml", overlay, check_folders=False)
    cache = layout.dataset_cache_meta(cfg.resources, cfg.dataset_tag("celeba"))
    copy = layout.user_config(cfg.outdir)
    result = snakemake("--cores", "1", "--configfile", "config/ci.yaml", str(overlay), "--", str(copy), str(cache))
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    assert copy.read_text().startswith("name: ci") and cache.is_file()
    logs = layout.run_logs(cfg.logdir, cfg.name, cfg.outdir)
    job_log = next((logs / "provision").glob("dataset_*.log")).read_text(encoding="utf-8")
    assert str(cache) in job_log and "unrecognized arguments" not in job_log


def test_two_outdirs_of_one_config_name_keep_their_job_logs_apart(tmp_path):
    """One config name, one logdir, two outdirs: every job log path of one run differs from every
    one of the other (a dry run's shell commands), and list inputs reach a command quoted one by one."""
    logs_of = {}
    for run in ("run one", "run two"):
        out = tmp_path / run
        result = snakemake(
            "-n", "-p", "--cores", "1", "--configfile", "config/ci.yaml", "--config", f"outdir={out}",
            f"logdir={tmp_path}/logs", f"resources={tmp_path}/res",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        commands = [shlex.split(c) for c in shell_commands(result.stdout)]
        logs_of[run] = {c[c.index(">") + 1] for c in commands if ">" in c}
        assert logs_of[run] and all(Path(p).parent.is_relative_to(tmp_path / "logs") for p in logs_of[run])
        # Figure 1's grid-point models: one argument each, in the outdir
        figure = next(c for c in commands if c[3:5] == ["figure", "1"])
        models = figure[figure.index("--models") + 1 : figure.index("--seed")]
        assert len(models) > 1 and all(m.startswith(f"{out}/sweeps/") and m.endswith("model.pt") for m in models)
    assert not logs_of["run one"] & logs_of["run two"]
    # one outdir however it is spelled: one log folder
    spellings = {layout.run_logs("logs", "ci", p) for p in ("results/ci", str(Path.cwd() / "results" / "ci"))}
    assert len(spellings) == 1


def test_a_description_is_one_line_of_plain_text():
    for bad in ("ok\n.. raw:: html\n\n   <script>alert(1)</script>", "ends with a line break\n", "x" * 301):
        with pytest.raises(ConfigError, match="description"):
            load_config("config/ci.yaml", overrides={"description": bad}, check_folders=False)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _hostile(tags) -> list:
    return [
        (tag, attrs)
        for tag, attrs in tags
        if tag in ("img", "b")
        or any(k.startswith("on") or (v or "").strip().lower().startswith("javascript:") for k, v in attrs.items())
    ]


@pytest.mark.e2e
def test_the_report_shows_a_hostile_description_as_text(tmp_path):
    """`snakemake --report` of a finished (one-job) run whose description holds a script end tag, an
    element with an event handler and reStructuredText links and roles: neither the page nor the
    workflow description it inserts as HTML holds any element or attribute of it."""
    flags = ("--configfile", "config/ci.yaml", "--config", f"outdir={tmp_path}/out", f"logdir={tmp_path}/logs")
    target = str(tmp_path / "out" / "config.yaml")
    run = snakemake("--cores", "1", *flags, f"description={HOSTILE}", "--", target)
    assert run.returncode == 0, run.stderr[-3000:]
    report = tmp_path / "report.html"
    made = snakemake("--cores", "1", *flags, f"description={HOSTILE}", "--report", str(report), "--", target)
    assert made.returncode == 0, made.stderr[-3000:]
    html = report.read_text(encoding="utf-8")
    page = _Tags()
    page.feed(html)
    assert not _hostile(page.tags)
    desc_html = json.loads(re.search(r"var workflow_desc = (\".*?\");\n", html, re.S).group(1))
    inserted = _Tags()
    inserted.feed(desc_html)
    assert not _hostile(inserted.tags), desc_html
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in desc_html  # shown, as text


_PARAMS_SCRIPT = """
import json, sys
from pathlib import Path
from snakemake import logging
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

with SnakemakeApi(OutputSettings(dryrun=True)) as api:
    wf_api = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(config=json.loads(sys.argv[1]), configfiles=[Path("config/ci.yaml")]),
        snakefile=Path("Snakefile"),
        workdir=Path.cwd(),
    )
    wf_api.dag(DAGSettings(forceall=True))
    wf = wf_api._workflow
    wf._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
    wf._build_dag()
    # as Snakemake's report records a reported output's params (snakemake.report.FileRecord)
    print(json.dumps({str(j.output[0]): logging.format_dict(j.params).replace(chr(10), r"\\n").replace('"', r'\\"')
                      for j in wf.dag.jobs if j.rule.name == "table"}))
"""


def test_a_tables_recorded_settings_cannot_close_the_reports_script(tmp_path):
    """The table rule's params, which the report embeds as raw JSON in a <script> block: the free-text
    description is not among them, and a `</script>` in a tracked setting (a CelebA folder name) is
    recorded without its `<`, so the page around it parses as one script."""
    root = str(tmp_path / "celeba</script><img src=x onerror=alert(1)>")
    config = {"outdir": f"{tmp_path}/out", "logdir": f"{tmp_path}/logs", "description": HOSTILE}
    config["data"] = {"celeba": {"root": root, "synthetic_standin": {"n": 200}}}
    result = subprocess.run(
        [sys.executable, "-c", _PARAMS_SCRIPT, json.dumps(config)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    params = json.loads(result.stdout.strip().splitlines()[-1])
    assert params and all("celeba" in p and "description" not in p and "<" not in p for p in params.values())
    page = _Tags()
    page.feed(f'<html><script id="results">\nvar results = {json.dumps(params)};\n</script></html>')
    assert [tag for tag, _ in page.tags] == ["html", "script"]
