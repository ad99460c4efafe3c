# Config validation, the resolved config file the jobs read, wildcard constraints, target lists.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from arelbo import layout
from arelbo.config import MNIST_ONLY_HINT, ConfigError, celeba_problem, dump_config, from_dict

try:
    CFG = from_dict(config, source="workflow config", check_folders=False)
except ConfigError as error:
    raise WorkflowError(str(error)) from None

OUT = CFG.outdir
RES = CFG.resources
# Logs per config name (logs/quick/…, logs/ci/…): runs of different configs never share a log file.
LOGS = f"{CFG.logdir}/{CFG.name}"
# Jobs run `python -m arelbo` with Snakemake's own interpreter: no reliance on PATH or an activated venv.
ARELBO = f"{sys.executable} -m arelbo"

# The merged, validated config every job reads; rewritten only when it changes.
CONFIG_FILE = Path(OUT) / "config.yaml"
_resolved = dump_config(CFG)
if not CONFIG_FILE.is_file() or CONFIG_FILE.read_text() != _resolved:
    from arelbo.runtime import atomic_write_text

    atomic_write_text(CONFIG_FILE, _resolved)

TAGS = {dataset: CFG.dataset_tag(dataset) for dataset in CFG.datasets}
DATASET_OF_TAG = {tag: dataset for dataset, tag in TAGS.items()}

if "celeba" in CFG.datasets and celeba_problem(CFG) is not None:
    logger.warning(
        f"CelebA not found at data.celeba.root={CFG.data.celeba.root!r} (img_align_celeba/ + "
        "list_eval_partition.txt): CelebA jobs will fail until it is downloaded there; MNIST jobs run. "
        + MNIST_ONLY_HINT
    )


def _alternatives(values):
    return "|".join(sorted(str(v) for v in values))


wildcard_constraints:
    dataset=_alternatives(CFG.datasets),
    tag=_alternatives(TAGS.values()),
    model=_alternatives(CFG.models),
    estimator=_alternatives(CFG.estimators) or "none",
    seed=_alternatives(CFG.seeds),
    split="train|val|test",


def fid_reference_file(dataset):
    return str(layout.fid_reference(RES, TAGS[dataset], CFG.fid.reference_split, CFG.fid_reference_count(dataset)))


def dataset_meta(dataset):
    return str(layout.dataset_cache_meta(RES, TAGS[dataset]))


def all_targets():
    return [f"{OUT}/table3.tex", f"{OUT}/table4.tex"]


# The prior is undefined for deterministic autoencoders without a prior-matching term (SPEC §5).
NO_PRIOR_MODELS = {"ae", "rae", "rae_gp"}
# Table 3's estimator columns per dataset (SPEC §7: GMM-100 for CelebA only); equal to
# arelbo.tables.TABLE_SPECS[3] (tests/test_tables.py), not imported: that would load pandas in every job.
TABLE3_ESTIMATORS = {"mnist": ("prior", "2ndvae", "gmm10"), "celeba": ("prior", "2ndvae", "gmm10", "gmm100")}


def table_metric_files(table):
    """Every metric record a table needs, over datasets × models × seeds (and estimators)."""
    files = []
    for dataset in CFG.datasets:
        for model in CFG.models:
            for seed in CFG.seeds:
                base = f"{OUT}/metrics/{dataset}/{model}/seed{seed}"
                if table == 3:
                    files.append(f"{base}/mse.json")
                    files += [f"{base}/fid_{e}.json" for e in CFG.estimators
                              if e in TABLE3_ESTIMATORS[dataset] and not (e == "prior" and model in NO_PRIOR_MODELS)]
                else:
                    files += [f"{base}/fid_interp_{mode}.json" for mode in ("mid", "random")]
    return files

