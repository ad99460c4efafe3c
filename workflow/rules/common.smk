# Config validation, the resolved config file the jobs read, wildcard constraints, target lists.
import dataclasses
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from arelbo.core import layout, registry
from arelbo.core.config import (
    MNIST_ONLY_HINT,
    ConfigError,
    celeba_problem,
    dump_config,
    from_dict,
    recorded,
    unwritable_reason,
)

try:
    CFG = from_dict(config, source="workflow config", check_folders=False)
except ConfigError as error:
    raise WorkflowError(str(error)) from None
# `reduced` as derived from the sizes (arelbo.core.config.reduced_because), for the report's templates
config["reduced"] = CFG.reduced

OUT = CFG.outdir
RES = CFG.resources
# Logs per run: <logdir>/<name>-<hash of the resolved outdir> (arelbo.core.layout.run_logs), so runs
# of different configs, or of one config into two outdirs, never share a log or benchmark file.
LOGS = layout.run_logs(CFG.logdir, CFG.name, OUT)
# A Table 3 cell's wildcards, as arelbo.core.layout's path functions take them, and the same cell as
# the folders of its job logs (<stage>/{dataset}/{model}/seed{seed}).
CELL = ("{dataset}", "{model}", "{seed}")
CELL_LOG = ("{dataset}", "{model}", layout.seed_folder("{seed}"))
# Jobs run `python -m arelbo` with Snakemake's own interpreter: no reliance on PATH or an activated venv.
# Quoted here (a venv in a folder with a space); every other value in a shell command is quoted there
# with `:q`.
ARELBO = f"{shlex.quote(sys.executable)} -m arelbo"

# The merged, validated config every job reads, content-addressed: <outdir>/configs/<sha256>.yaml.
# It is written when a run starts (`onstart`: after the workflow's lock is taken, never for a dry run,
# `--report` or a cluster job's re-parse, which finds it on the shared file system). Another config is
# another file, so a run can never change what another invocation's jobs read. Which settings each
# output depends on is recorded per rule (`tracked` below), so Snakemake re-runs exactly the jobs whose
# settings changed. <outdir>/config.yaml, the user-facing copy, is written by a rule (`resolved_config`).
_resolved = dump_config(CFG)
CONFIG_FILE = layout.resolved_config(OUT, _resolved)


onstart:
    if not CONFIG_FILE.is_file():
        from arelbo.core.runtime import atomic_write_text

        atomic_write_text(CONFIG_FILE, _resolved)


def _lookup(tree, dotted):
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


# Which images a split holds: the source (CelebA folder or stand-in; MNIST's validation size). A split's
# limit is tracked by the rules that read that split.
def split_keys(dataset, *splits):
    return (
        f"data.{dataset}.root",
        f"data.{dataset}.synthetic_standin",
        f"data.{dataset}.val_size",
        *(f"data.{dataset}.limit.{s}" for s in splits),
    )


def tracked(*keys):
    """params for a rule: the config entries its outputs depend on (dotted keys; {dataset} and
    {model} are filled from the job's wildcards). Snakemake records them per output, so a change
    re-runs exactly the jobs it affects, and settings from another invocation are never mistaken
    for those an output was made with. Recorded through arelbo.core.config.recorded: the HTML report
    embeds them in a <script> block."""

    def settings(wildcards):
        names = dict(wildcards.items())
        return {key.format(**names): recorded(_lookup(CFG.raw, key.format(**names))) for key in keys}

    return settings


def second_stage_settings(wildcards):
    # what a fitted second-stage VAE depends on (second_stage without its scheduling switch)
    return dataclasses.asdict(CFG.second_stage.settings)


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


# profiles/gpu-workstation counts one GPU as GPU_SLOTS slots (the integer resource `gpu_slots`): a
# CelebA training (the largest net, at full batch) has the card alone, every other GPU job takes one
# slot, so up to four MNIST-sized jobs share it; CPU-only rules (GMM fits, tables, figures' layout,
# claims) declare no slot and never wait for one. `gpu=1` stays for SLURM's per-job GPU request.
GPU_SLOTS = 4


def partition(kind):
    """A rule's SLURM partition from the config's two settings (`cluster.gpu_partition` for the rules
    whose jobs run on the config's device, `cluster.cpu_partition` for the other submitted rules),
    as the resource the SLURM executor reads. Empty: no resource at all, so the profile's
    default-resources or the cluster's default partition apply."""
    name = {"gpu": CFG.cluster.gpu_partition, "cpu": CFG.cluster.cpu_partition}[kind]
    return {"slurm_partition": name} if name else {}


def gpu_slots(whole_card_for_celeba=False):
    return lambda wc: GPU_SLOTS if whole_card_for_celeba and getattr(wc, "dataset", "") == "celeba" else 1


def fid_reference_file(dataset):
    return str(layout.fid_reference(RES, TAGS[dataset], CFG.fid.reference_split, CFG.fid_reference_count(dataset)))


def dataset_meta(dataset):
    return str(layout.dataset_cache_meta(RES, TAGS[dataset]))


# Shared files this run would add to `resources`: a read-only one is said now, not as a stack trace
# when Snakemake creates a job's output folder there (or after an Inception pass).
_new_shared = [
    f
    for f in [str(layout.inception_weights(RES))]
    + [fid_reference_file(d) for d in CFG.datasets]
    + [dataset_meta(d) for d in CFG.datasets]
    if not Path(f).exists()
]
if _new_shared and unwritable_reason(Path(RES)):
    raise WorkflowError(
        f"resources: {RES} cannot be written ({unwritable_reason(Path(RES))}), and this run needs new "
        f"shared files there: {', '.join(_new_shared)}. Point `resources` at a writable folder, or "
        "create these files first with a run that can write there."
    )


def all_targets():
    return [str(layout.table_tex(OUT, 3)), str(layout.table_tex(OUT, 4))]


# The prior is undefined for deterministic autoencoders without a prior-matching term (docs/design.md §5);
# which models those are is arelbo.core.registry's (plugins' included).
NO_PRIOR_MODELS = set(registry.no_prior_models())


def model_samplers(dataset, model):
    """The samplers a (dataset, model) is scored on (arelbo.core.layout.scored_samplers)."""
    return layout.scored_samplers(CFG.estimators, dataset, has_prior=model not in NO_PRIOR_MODELS)


def table_metric_files(table):
    """Every metric record a table needs, over datasets × models × seeds (and estimators)."""
    files = []
    for dataset in CFG.datasets:
        for model in CFG.models:
            for seed in CFG.seeds:
                samplers = model_samplers(dataset, model)
                if table == 3:
                    metrics = ["mse"] + [f"fid_{s}" for s in samplers if not s.startswith("interp_")]
                else:
                    metrics = [f"fid_{s}" for s in samplers if s.startswith("interp_")]
                files += [layout.metric_path(OUT, dataset, model, seed, m) for m in metrics]
    return files


# ------------------------------------------------------------------ helpers of provision.smk
def _prepare_inputs(wildcards):
    if DATASET_OF_TAG[wildcards.tag] == "mnist":
        return rules.provision_mnist.output
    return []


# ------------------------------------------------------------------ helpers of evaluate.smk
def estimator_runtime(dataset, estimator):
    """Minutes a cluster should allow a prior/GMM fit: CelebA's GMM-100 gets five times the EM
    iterations its measured fit needed, on one core (docs/engineering-notes.md, "GMM-100 runtime");
    the rule's 2 threads only make it faster. MNIST's latents and GMM-10 are far cheaper."""
    if estimator == "prior":
        return 10
    if dataset == "celeba":
        return 240 if estimator == "gmm100" else 60
    return 60


def _sampler_source(wildcards):
    cell = (wildcards.dataset, wildcards.model, wildcards.seed)
    if wildcards.sampler.startswith("interp_"):
        return {"latents": layout.latents_file(OUT, *cell)}
    return {"estimator": layout.estimator_path(OUT, *cell, wildcards.sampler)}


def _sampler_flag(wildcards, input):
    # a whole option, so its path is quoted here (the shell command puts it in unquoted)
    if "latents" in input.keys():
        return f"--latents {shlex.quote(input.latents)}"
    return f"--estimator-file {shlex.quote(input.estimator)}"


# ------------------------------------------------------------------ helpers of section3.smk
# Section 3 is an MNIST study (the Appendix D net on MNIST's training split): without MNIST in
# `datasets` it is absent from the DAG, and the workflow says so once.
SECTION3_POINTS = {p.id: p for p in layout.grid_points(CFG.section3)} if "mnist" in CFG.datasets else {}
if "mnist" not in CFG.datasets:
    logger.info(
        "Section 3 (Tables 1 and 5, Figures 1-3) is an MNIST study; `datasets` has no mnist, so it "
        "is left out. Add mnist to `datasets` to run it."
    )
FIGS = CFG.section3.figures


def section3_model(point_id, seed):
    return layout.section3_file(OUT, point_id, seed, layout.MODEL_FILE)


def section3_criteria_files(table):
    return [
        layout.section3_file(OUT, pid, seed, layout.CRITERIA_FILE)
        for pid, p in SECTION3_POINTS.items()
        if p.table == table
        for seed in CFG.seeds
    ]


def figure_points(number):
    """Grid point ids a figure shows (config section3.figures; checked against the grid)."""
    if number == 1:
        return [
            p.id
            for p in SECTION3_POINTS.values()
            if p.table == 1 and any(abs(p.log10_sigma_x2 - v) < 1e-9 for v in FIGS.figure1_log10_sigma_x2)
        ]
    if number == 2:
        return [
            p.id
            for p in SECTION3_POINTS.values()
            if p.table == 1
            and p.encoding == "stochastic"
            and any(abs(p.log10_sigma_x2 - v) < 1e-9 for v in FIGS.figure2_log10_sigma_x2)
        ]
    return [
        p.id
        for p in SECTION3_POINTS.values()
        if p.table == 5 and any(abs(p.log10_sigma_z2 - v) < 1e-9 for v in FIGS.figure3_log10_sigma_z2)
    ]


def section3_targets():
    targets = []
    if any(p.table == 1 for p in SECTION3_POINTS.values()):
        targets.append(str(layout.table_tex(OUT, 1)))
    if any(p.table == 5 for p in SECTION3_POINTS.values()):
        targets.append(str(layout.table_tex(OUT, 5)))
    targets += [str(layout.figure_path(OUT, f"figure{n}")) for n in (1, 2, 3) if figure_points(n)]
    return targets


# ------------------------------------------------------------------ helpers of tables.smk
def table_inputs(n):
    return section3_criteria_files(n) if n in (1, 5) else table_metric_files(n)


# ------------------------------------------------------------------ helpers of report.smk
def _curve_logs(wildcards):
    if wildcards.what == "section3":
        return [layout.section3_file(OUT, pid, seed, layout.TRAIN_LOG) for pid in SECTION3_POINTS for seed in CFG.seeds]
    return [layout.train_log(OUT, wildcards.what, model, seed) for model in CFG.models for seed in CFG.seeds]


def built_tables():
    """The paper's tables this config builds (Tables 1 and 5 need Section 3, i.e. MNIST)."""
    return [n for n in (1, 3, 4, 5) if str(layout.table_tex(OUT, n)) in all_targets() + section3_targets()]


def report_targets():
    tables = built_tables()
    curves = list(CFG.datasets) + (["section3"] if SECTION3_POINTS else [])
    return (
        [layout.claims_path(OUT, "csv"), layout.costs_path(OUT)]
        + [layout.figure_path(OUT, f"table{n}_vs_paper") for n in tables]
        + [layout.figure_path(OUT, f"training_curves_{what}") for what in curves]
    )
