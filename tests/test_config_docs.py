"""config/README.md, the reference of every configuration key, is the generator's output for today's
schema and config/config.yaml; the workflow catalog's file says what this workflow really does."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from arelbo.core import config_docs
from arelbo.core.config import DEFAULT_CONFIG, load_schema

REPO = Path(__file__).resolve().parents[1]


def test_config_readme_is_generated_from_the_schema_and_the_paper_config():
    assert config_docs.README == REPO / "config" / "README.md"
    assert config_docs.README.read_text() == config_docs.render(), (
        "config/README.md is out of date with workflow/schemas/config.schema.yaml, config/config.yaml or "
        "arelbo/core/registry.py: "
        f"regenerate it with `{config_docs.REGENERATE}`"
    )


def _schema_keys(schema: dict, node: dict, prefix: str = "") -> set[str]:
    """Every key path of the schema, nested mappings included (also one that may be null instead)."""
    keys = set()
    for name, child in (node.get("properties") or {}).items():
        while "$ref" in child:
            target = schema["definitions"][child["$ref"].rsplit("/", 1)[1]]
            child = {**target, **{k: v for k, v in child.items() if k != "$ref"}}
        keys.add(prefix + name)
        for alternative in (child, *child.get("oneOf", [])):
            keys |= _schema_keys(schema, alternative, prefix + name + ".")
    return keys


def test_the_reference_describes_every_key_with_its_paper_value():
    """Every key of the schema has a row with a description (hparams: one row per model and name),
    and a key's default is its value in config/config.yaml."""
    text = config_docs.render()
    rows = {m.group(1): m.group(2).split(" | ") for m in re.finditer(r"^\| `([^`]+)` \| (.*) \|$", text, re.MULTILINE)}
    # a top-level mapping is a section: its heading, its description, then its keys' table
    sections = dict(re.findall(r"^## `(\w+)`\n\n(.*)$", text, re.MULTILINE))
    schema = load_schema()
    keys = {k for k in _schema_keys(schema, schema) if not k.startswith("hparams.")} - sections.keys()
    assert len(keys) > 60 and not keys - rows.keys(), f"keys without a row: {sorted(keys - rows.keys())}"
    assert {"data", "fid", "train", "section3", "hparams"} <= sections.keys()
    undescribed = sorted(key for key, cells in rows.items() if not cells[-1].strip())
    undescribed += sorted(name for name, first in sections.items() if first.startswith("|"))
    assert not undescribed, f"add a `description:` to these keys in workflow/schemas/config.schema.yaml: {undescribed}"
    base = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert rows["fid.n_samples"][1] == f"`{base['fid']['n_samples']}`"
    assert rows["data.celeba.root"][1] == f"`{base['data']['celeba']['root']}`"
    assert rows["train.mnist.precision"][1] == "`tf32`"  # a dataclass default: config.yaml sets none
    assert rows["data.celeba.synthetic_standin.n"][1] == config_docs.NOT_SET
    assert "`bootstrap`" in rows["fid.uncertainty"][2]
    assert "hparams.wae_mmd.<dataset>.lambda_mmd" in rows


def test_the_workflow_catalog_file_says_what_the_workflow_does():
    """.snakemake-workflow-catalog.yml: no rule declares a conda environment or a container, so it
    must not claim `--sdm conda` or `--sdm apptainer`; `report: true` needs the Snakefile's report."""
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(catalog) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert set(catalog["mandatory-flags"]) == {"desc", "flags"}
    rules = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    text = "\n".join(path.read_text() for path in rules)
    conda = re.search(r"^\s+conda:", text, re.MULTILINE) is not None
    container = re.search(r"^\s*container(ized)?:", text, re.MULTILINE) is not None
    stack = catalog["software-stack-deployment"]
    assert stack == {"conda": conda, "apptainer": container, "apptainer+conda": conda and container}
    assert catalog["report"] == (re.search(r"^report:", text, re.MULTILINE) is not None)
    assert (REPO / "config" / "README.md").is_file() and (REPO / "config" / "config.yaml").is_file()
