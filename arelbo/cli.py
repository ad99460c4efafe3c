"""`arelbo` command line: what the Snakemake rules call, and what users run by hand.

The parser below is the one list of commands and options: `arelbo --help` prints the commands,
`arelbo <command> --help` each one's options. Every rule calls exactly one command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from arelbo.core import allocator, layout, registry
from arelbo.core.errors import ArelboError, UsageError

log = logging.getLogger("arelbo")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    config: bool  # takes --configfile/--config
    options: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], None]


COMMANDS: list[Command] = []  # in the order `arelbo --help` lists them: the order of this file


def command(name: str, *, help: str, options: Callable[[argparse.ArgumentParser], None], config: bool = True):
    """Register the decorated handler as `arelbo <name>`, with its options (defined beside it)."""

    def register(handler):
        COMMANDS.append(Command(name, help, config, options, handler))
        return handler

    return register


def _seed_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the seed of the run (the config's `seeds`; every random choice derives from it)",
    )


def _dataset_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=registry.DATASETS, help="the dataset")


def _model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=_model_id, help="a model id (arelbo/core/registry.py, or a plugin's)")


def _training_options(p: argparse.ArgumentParser, folder: str) -> None:
    # train and section3-train share these: both resume from a checkpoint in --out
    _seed_option(p)
    p.add_argument("--out", required=True, help=f"the {folder} folder (model.pt, train_log.csv, checkpoint.pt)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the log still says each epoch)")


def _load(args, check_folders: bool = False, datasets=None):
    """The merged config; with `datasets`, the folders of just those datasets are checked (a job
    checks the data it reads: MNIST jobs of the paper config run while CelebA is not downloaded)."""
    from arelbo.core.config import check_paths, load_config

    cfg = load_config(*(args.config or []), check_folders=check_folders)
    if datasets:
        check_paths(cfg, datasets=datasets)
    return cfg


def _job_device(cfg):
    """Resolve the config's device before any work (a clear error for an unusable `cuda`) and log
    which device, GPU model, torch and CUDA versions this job runs on."""
    from arelbo.core.precision import EVALUATION_PRECISION, set_arithmetic
    from arelbo.core.runtime import configure_cuda_determinism, describe_device, device_info, pick_device

    device = pick_device(cfg.device)
    # IEEE FP32 for all a job does; a training sets its model's precision around its epochs
    set_arithmetic(EVALUATION_PRECISION)
    if device.type == "cuda":
        configure_cuda_determinism(cfg.cuda_deterministic)
    log.info("device: %s", describe_device(device_info(device)))
    return device


def _resources(args) -> Path:
    if getattr(args, "resources", None):
        return Path(args.resources)
    if getattr(args, "config", None):
        return Path(_load(args, check_folders=False).resources)
    return Path("resources")


def _provision_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what",
        choices=["mnist", "inception", "data", "all"],
        help="what to fetch and verify (data: decode one dataset into its cache)",
    )
    p.add_argument("--resources", help="resources folder (default: the config's, else ./resources)")
    p.add_argument("--dataset", choices=registry.DATASETS, help="with `data`: the dataset to decode and cache")
    p.add_argument("--threads", type=int, default=2, help="decoding processes for CelebA")


@command("provision", help="fetch and verify data and weights", options=_provision_options)
def cmd_provision(args) -> None:
    from arelbo.stages import provision

    what = args.what
    if what in ("mnist", "all"):
        local_copy = None
        if args.config:
            local_copy = _load(args, check_folders=False).data.mnist.local_copy
        path = provision.provision_mnist(layout.mnist_raw_dir(_resources(args)), local_copy=local_copy)
        print(f"MNIST: {path} (4 files, MD5 verified)")
    if what in ("inception", "all"):
        path = provision.provision_inception(layout.inception_weights(_resources(args)))
        print(f"Inception weights: {path}")
    if what == "data":
        from arelbo.stages.data import prepare_dataset

        if not args.dataset:
            raise UsageError("`provision data` needs --dataset mnist|celeba")
        cfg = _load(args, check_folders=False)
        if args.dataset == "celeba" and cfg.data.celeba.synthetic_standin is not None:
            standin = cfg.data.celeba.synthetic_standin
            if layout.celeba_folder(cfg.data.celeba.root) is None:
                provision.make_celeba_fixture(Path(cfg.data.celeba.root), standin.n, standin.seed)
        from arelbo.core.config import check_paths

        check_paths(cfg, datasets=[args.dataset])
        print(f"{args.dataset}: {prepare_dataset(args.dataset, cfg, workers=args.threads)}")


def _fixture_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["celeba"], help="the dataset to imitate")
    p.add_argument("dir", help="the folder to write the images into")
    p.add_argument("--n", type=_positive_int, default=64, help="number of images")
    _seed_option(p)


@command("fixture", help="write a synthetic stand-in dataset", config=False, options=_fixture_options)
def cmd_fixture(args) -> None:
    from arelbo.stages.provision import make_celeba_fixture

    if args.kind != "celeba":
        raise UsageError(f"unknown fixture {args.kind!r}; available: celeba")
    root = make_celeba_fixture(Path(args.dir), args.n, seed=args.seed)
    print(f"synthetic CelebA stand-in with {args.n} images written to {root}")


def _fid_reference_options(p: argparse.ArgumentParser) -> None:
    _dataset_option(p)
    p.add_argument("--output", help="the .npz to write (default: resources/fid/…)")


@command("fid-reference", help="FID reference statistics of a dataset split (cached)", options=_fid_reference_options)
def cmd_fid_reference(args) -> None:
    from arelbo.core.runtime import pick_device
    from arelbo.metrics.fid import reference_stats
    from arelbo.stages.data import load_split

    cfg = _load(args, datasets=[args.dataset])
    _job_device(cfg)
    split, count = cfg.fid.reference_split, cfg.fid_reference_count(args.dataset)
    output = (
        Path(args.output)
        if args.output
        else layout.fid_reference(cfg.resources, cfg.dataset_tag(args.dataset), split, count)
    )
    stats = reference_stats(
        output,
        lambda: load_split(args.dataset, split, cfg, limit=count),
        dataset=args.dataset,
        split=split,
        count=count,
        weights_path=layout.inception_weights(cfg.resources),
        batch_size=cfg.fid.batch_size,
        device=pick_device(cfg.device),
    )
    print(f"FID reference statistics for {args.dataset}/{split} (n={int(stats['n'])}): {output}")


def _train_options(p: argparse.ArgumentParser) -> None:
    _dataset_option(p)
    _model_option(p)
    _training_options(p, "model")


@command("train", help="train one model (resumes from its checkpoint)", options=_train_options)
def cmd_train(args) -> None:
    import torch

    from arelbo.stages.train import train_model

    cfg = _load(args, datasets=[args.dataset])
    if args.threads:
        torch.set_num_threads(args.threads)
    _job_device(cfg)
    path = train_model(cfg, args.dataset, args.model, args.seed, Path(args.out), progress=not args.no_progress)
    print(f"trained {args.model} on {args.dataset} (seed {args.seed}): {path}")


def _section3_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--point", required=True, help="e.g. table1/stochastic/log10_sigma_x2=-0.5, table5/log10_sigma_z2=0.6"
    )
    _training_options(p, "grid point's")


@command("section3-train", help="train one Section 3 grid point (Tables 1, 5)", options=_section3_train_options)
def cmd_section3_train(args) -> None:
    import torch

    from arelbo.stages.section3 import GridPoint, train_point

    cfg = _load(args, datasets=["mnist"])  # Section 3 is an MNIST study
    if args.threads:
        torch.set_num_threads(args.threads)
    _job_device(cfg)
    try:
        point = GridPoint.parse(args.point)
    except ValueError as exc:
        from arelbo.core.config import ConfigError

        raise ConfigError(str(exc)) from None
    path = train_point(cfg, point, args.seed, Path(args.out), progress=not args.no_progress)
    print(f"trained Section 3 point {point.id} (seed {args.seed}): {path}")


def _section3_train_group_options(p: argparse.ArgumentParser) -> None:
    from arelbo.core.layout import SECTION3_GROUPS

    p.add_argument("--group", required=True, choices=SECTION3_GROUPS, help="the grid's group (one batched job)")
    _seed_option(p)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the log still says each epoch)")


@command(
    "section3-train-group",
    help="train every Section 3 grid point of one group as one "
    "batched job (section3.batched), into the config's outdir",
    options=_section3_train_group_options,
)
def cmd_section3_train_group(args) -> None:
    import torch

    from arelbo.core.config import ConfigError
    from arelbo.stages.section3 import grid_points, train_points_batched

    cfg = _load(args, datasets=["mnist"])
    if args.threads:
        torch.set_num_threads(args.threads)
    _job_device(cfg)
    points = [p for p in grid_points(cfg.section3) if p.group == args.group]
    if not points:
        raise ConfigError(f"the config's Section 3 grid has no point of group {args.group!r}")
    out_dirs = [layout.section3_dir(cfg.outdir, p.id, args.seed) for p in points]
    train_points_batched(
        cfg,
        points,
        args.seed,
        out_dirs,
        layout.section3_group_checkpoint(cfg.outdir, args.group, args.seed),
        progress=not args.no_progress,
    )
    print(f"trained {len(points)} Section 3 points of {args.group} as one batched job (seed {args.seed})")


def _criteria_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-file", required=True, help="the trained model.pt")
    _seed_option(p)
    p.add_argument("--out", required=True, help="the JSON records to write")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


@command("criteria", help="Section 3 criteria of a trained grid point (JSON records)", options=_criteria_options)
def cmd_criteria(args) -> None:
    import torch

    from arelbo.stages.section3 import write_criteria

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _load(args, datasets=["mnist"])
    _job_device(cfg)
    print(Path(write_criteria(cfg, Path(args.model_file), args.seed, Path(args.out))).read_text())


def _figure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("number", type=int, choices=[1, 2, 3], help="the paper's figure number")
    p.add_argument("--models", nargs="+", required=True, help="model.pt files of the grid points shown")
    _seed_option(p)
    p.add_argument("--out", required=True, help="the PNG to write")


@command("figure", help="Figure 1 (perturbed decodings) or 2/3 (t-SNE) as PNG", options=_figure_options)
def cmd_figure(args) -> None:
    from arelbo.stages.section3 import draw_figure1, draw_tsne, load_point_model

    cfg = _load(args, datasets=["mnist"])
    _job_device(cfg)
    files = {load_point_model(Path(f))[1]["point"]: Path(f) for f in args.models}
    if args.number == 1:
        path = draw_figure1(cfg, files, args.seed, Path(args.out))
    else:
        title = {
            2: "Figure 2: t-SNE of the latent space, Table 1 stochastic encoding",
            3: "Figure 3: t-SNE of the latent space, Table 5 (fixed σz²)",
        }[args.number]
        path = draw_tsne(cfg, files, args.seed, Path(args.out), title=title)
    print(f"figure {args.number}: {path}")


def _plot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "kind", choices=["comparison", "curves"], help="comparison: reproduced vs paper; curves: training curves"
    )
    p.add_argument("--table", type=int, choices=[1, 3, 4, 5], help="with comparison: the table")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument(
        "--input", nargs="+", required=True, help="comparison: the table's vs_paper CSV; curves: train_log.csv files"
    )


@command("plot", help="report plots: paper comparison, training curves", options=_plot_options)
def cmd_plot(args) -> None:
    import pandas as pd

    from arelbo.reporting import figures

    cfg = _load(args, check_folders=False)
    note = f"config {cfg.name}" + (" — reduced config, not comparable with the paper" if cfg.reduced else "")
    if args.kind == "comparison":
        if args.table is None or not args.input:
            raise UsageError("`plot comparison` needs --table N --input tables/tableN_vs_paper.csv")
        path = figures.paper_comparison(
            pd.read_csv(args.input[0]), Path(args.out), caption=f"Table {args.table}: reproduced vs paper ({note})"
        )
    else:
        logs = {}
        for log_file in map(Path, args.input):
            parts = log_file.parent.parts
            # models/{dataset}/{model}/seed{s}/ or sweeps/{point id}/seed{s}/
            folder = layout.SECTION3_FOLDER
            label = "/".join(parts[parts.index(folder) + 1 :]) if folder in parts else "/".join(parts[-2:])
            logs[label] = pd.read_csv(log_file)
        path = figures.training_curves(logs, Path(args.out), caption=f"training curves ({note})")
    print(f"plot: {path}")


def _encode_options(p: argparse.ArgumentParser) -> None:
    _dataset_option(p)
    p.add_argument("--model-file", required=True, help="the trained model.pt")
    p.add_argument("--out", required=True, help="latents .npz")


@command("encode", help="encoder outputs of the train and test splits", options=_encode_options)
def cmd_encode(args) -> None:
    from arelbo.stages.evaluate import encode

    cfg = _load(args, datasets=[args.dataset])
    _job_device(cfg)
    print(encode(cfg, args.dataset, Path(args.model_file), Path(args.out)))


def _fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--estimator", required=True, choices=registry.estimator_ids(), help="the posterior estimator to fit"
    )
    p.add_argument(
        "--latents",
        required=True,
        nargs="+",
        help="latents .npz; several (2ndvae only) are fitted as one vectorised job (second_stage.batched)",
    )
    _seed_option(p)
    p.add_argument("--out", required=True, nargs="+", help="one estimator file per --latents file")


@command("fit", help="fit a posterior estimator on the training latents", options=_fit_options)
def cmd_fit(args) -> None:
    from arelbo.stages.evaluate import fit_and_save

    cfg = _load(args)
    if len(args.latents) != len(args.out):
        raise UsageError(
            f"give one --out per --latents file (got {len(args.latents)} latents, {len(args.out)} outputs)"
        )
    if len(args.latents) > 1 and args.estimator != "2ndvae":
        raise UsageError(
            f"several latents files are fitted as one batch only for 2ndvae, not {args.estimator}; run one fit per file"
        )
    _job_device(cfg)
    if args.estimator == "2ndvae" and len(args.latents) > 1:
        from arelbo.stages.evaluate import fit_and_save_second_stages

        for out in fit_and_save_second_stages(
            cfg, [Path(p) for p in args.latents], args.seed, [Path(p) for p in args.out]
        ):
            print(out)
        return
    print(fit_and_save(cfg, args.estimator, Path(args.latents[0]), args.seed, Path(args.out[0])))


def _sample_options(p: argparse.ArgumentParser) -> None:
    _dataset_option(p)
    p.add_argument("--model-file", required=True, help="the trained model.pt")
    p.add_argument(
        "--sampler",
        required=True,
        choices=registry.sampler_ids(),
        help="where latents come from: an estimator or an interpolation",
    )
    _seed_option(p)
    p.add_argument("--estimator-file", help="for estimator samplers")
    p.add_argument("--latents", help="for interpolation samplers (test-set encoder means)")
    p.add_argument("--out", required=True, help="the samples .npz to write (a PNG grid beside it)")


@command("sample", help="decode fid.n_samples latents to uint8 images (.npz + PNG grid)", options=_sample_options)
def cmd_sample(args) -> None:
    from arelbo.stages.evaluate import sample

    cfg = _load(args, datasets=[args.dataset])
    _job_device(cfg)
    print(
        sample(
            cfg,
            args.dataset,
            Path(args.model_file),
            args.sampler,
            args.seed,
            Path(args.out),
            estimator_file=Path(args.estimator_file) if args.estimator_file else None,
            latents=Path(args.latents) if args.latents else None,
        )
    )


def _metric_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "metric",
        choices=["mse", *(f"fid_{s}" for s in registry.sampler_ids())],
        help="the metric: mse, or the FID of one sampler",
    )
    _dataset_option(p)
    _model_option(p)
    _seed_option(p)
    p.add_argument("--model-file", help="for mse")
    p.add_argument("--samples", help="for FIDs: the samples .npz")
    p.add_argument("--out", required=True, help="the JSON record to write")


@command("metric", help="one metric of one model as a JSON record", options=_metric_options)
def cmd_metric(args) -> None:
    from arelbo.stages import evaluate

    cfg = _load(args, datasets=[args.dataset])
    _job_device(cfg)
    if args.metric == "mse":
        evaluate.mse(cfg, args.dataset, args.model, Path(args.model_file), args.seed, Path(args.out))
    else:
        sampler = args.metric.removeprefix("fid_")
        reference = layout.fid_reference(
            cfg.resources, cfg.dataset_tag(args.dataset), cfg.fid.reference_split, cfg.fid_reference_count(args.dataset)
        )
        evaluate.fid(
            cfg,
            args.dataset,
            args.model,
            args.seed,
            sampler,
            Path(args.samples),
            reference,
            layout.inception_weights(cfg.resources),
            Path(args.out),
        )
    print(Path(args.out).read_text())


def _sample_and_score_options(p: argparse.ArgumentParser) -> None:
    _dataset_option(p)
    _model_option(p)
    _seed_option(p)
    p.add_argument(
        "--samplers", required=True, nargs="+", choices=registry.sampler_ids(), help="the samplers to sample and score"
    )


@command(
    "sample-and-score",
    help="samples and FID/KID records of several samplers of one trained model, in one "
    "process (fid.batched), into the config's outdir",
    options=_sample_and_score_options,
)
def cmd_sample_and_score(args) -> None:
    from arelbo.stages.evaluate import sample_and_score

    cfg = _load(args, datasets=[args.dataset])
    _job_device(cfg)
    for out in sample_and_score(cfg, args.dataset, args.model, args.seed, args.samplers):
        print(out)


def _table_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", type=int, required=True, choices=[1, 3, 4, 5], help="the paper's table number")
    p.add_argument("--outdir", required=True, help="the folder for the table's .tex and CSVs")
    p.add_argument("metrics", nargs="+", help="metric JSON files")


@command("table", help="assemble a table from metric records", options=_table_options)
def cmd_table(args) -> None:
    from arelbo.reporting.tables import assemble_table

    for kind, path in assemble_table(
        _load(args), args.table, [Path(p) for p in args.metrics], Path(args.outdir)
    ).items():
        print(f"{kind}: {path}")


def _claims_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", help="a run's outdir (holds tables/table*_tidy.csv)")
    p.add_argument(
        "--paper",
        action="store_true",
        help="judge the paper's own tables instead (each value ± 0.1): checks the claims file",
    )
    p.add_argument("--claims", help="claims file (default: arelbo/reference/claims.yaml)")
    p.add_argument("--out-csv", help="default: <results>/claims.csv")
    p.add_argument("--out-tex", help="default: <results>/claims.tex")
    p.add_argument(
        "--comparable",
        choices=["reduced", "not-reduced"],
        help="override the tidy rows' `reduced` flag (value claims are judged only when not reduced)",
    )
    p.add_argument("--no-write", action="store_true", help="print the verdicts only (make quick's summary)")


@command(
    "claims",
    help="judge the paper's claims from a run's tidy table CSVs (PASS/FAIL/...); --config names its plugins",
    options=_claims_options,
)
def cmd_claims(args) -> None:
    from arelbo.reporting.claims import summary_text, write_claims

    reduced = {"reduced": True, "not-reduced": False, None: None}[args.comparable]
    if args.paper:  # the paper's own tables: does the claims file encode what its numbers say?
        from arelbo.reporting.claims import judge, load_claims, paper_tidy

        print(
            summary_text(judge(paper_tidy(), load_claims(args.claims)), title="Claims judged on the paper's own tables")
        )
        return
    if args.results is None:
        from arelbo.reporting.claims import ClaimsError

        raise ClaimsError("give --results DIR (a run's outdir) or --paper")
    if args.no_write:
        from arelbo.reporting.claims import judge, load_claims, read_tidy

        verdicts = judge(read_tidy(args.results), load_claims(args.claims), reduced=reduced)
    else:
        verdicts = write_claims(args.results, args.out_csv, args.out_tex, claims_file=args.claims, reduced=reduced)
    print(summary_text(verdicts, title=f"Claims of {args.results}"))
    if not args.no_write:
        print(f"every claim with its evidence: {args.out_csv or Path(args.results) / 'claims.csv'}")


def _config_options(p: argparse.ArgumentParser) -> None:
    """None beyond the configuration's."""


@command("config", help="validate and print the merged config", options=_config_options)
def cmd_config(args) -> None:
    from arelbo.core.config import celeba_problem, dump_config

    cfg = _load(args)
    sys.stdout.write(dump_config(cfg))
    # A missing download is not a config error: the MNIST jobs run without it. Say so, on stderr.
    problem = celeba_problem(cfg) if "celeba" in cfg.datasets else None
    if problem:
        print(f"arelbo config: warning: CelebA jobs will fail until it is downloaded: {problem}", file=sys.stderr)


def _plan_options(p: argparse.ArgumentParser) -> None:
    from arelbo.planning.kinds import device_kinds

    kinds = device_kinds()
    p.description = "Projected job-hours and wall time of a config's whole DAG on a device kind. Kinds: " + "; ".join(
        f"{kind} ({'projected' if 'projected' in row else 'measured'}"
        + (f", {row['host_cores']} host cores" if row.get("host_cores") else "")
        + ")"
        for kind, row in kinds.items()
    )
    p.add_argument(
        "--device",
        default="cpu-2core",
        choices=list(kinds),
        help="the device kind whose costs to use (arelbo/reference/costs.yaml; default: %(default)s)",
    )
    p.add_argument(
        "--cores",
        type=_positive_int,
        help="cores Snakemake may use (as its --cores; default: a GPU kind's host cores, else this machine's)",
    )
    p.add_argument(
        "--max-threads",
        type=_positive_int,
        help="threads per job, as Snakemake's --max-threads (make quick: 1); default: the rules' own",
    )
    p.add_argument(
        "--against",
        nargs="?",
        const="",
        metavar="LOGDIR",
        help="also show each rule's measured seconds from a finished run's benchmark files "
        "(default LOGDIR: the config's logdir; the run's own folder in it, <name>-<hash>, works too)",
    )


@command("plan", help="projected cost of a config on a device kind, before running it", options=_plan_options)
def cmd_plan(args) -> None:
    from arelbo.core.layout import run_logs
    from arelbo.planning.kinds import default_cores
    from arelbo.planning.plan import format_plan, plan, planned_jobs

    cfg = _load(args)
    against = None
    if args.against is not None:
        given = Path(args.against or cfg.logdir)
        if not given.is_dir():
            raise UsageError(f"--against {given}: no such log folder; pass the logdir of a finished run of this config")
        # the run's own log folder (it holds benchmarks/), or the logdir that holds it
        against = given if (given / "benchmarks").is_dir() else run_logs(given, cfg.name, cfg.outdir)
    jobs = planned_jobs(args.config or [])
    cores = args.cores or default_cores(args.device)
    result = plan(cfg, args.device, jobs, against=against, max_threads=args.max_threads, cores=cores)
    print(format_plan(result, cores=cores))


def _costs_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--logs",
        help="the run's log folder, <logdir>/<config name>-<hash> (default: the config's, arelbo.core.layout.run_logs)",
    )
    p.add_argument("--out", help="write one row per job to this CSV")


@command(
    "costs",
    help="measured cost of a finished run, per stage and per table row, from Snakemake's benchmark files",
    options=_costs_options,
)
def cmd_costs(args) -> None:
    from arelbo.core.layout import run_logs
    from arelbo.core.runtime import atomic_write_text
    from arelbo.reporting.costs import format_costs, read_benchmarks

    if args.logs:
        logs = Path(args.logs)
    else:
        cfg = _load(args)
        logs = run_logs(cfg.logdir, cfg.name, cfg.outdir)
    bench = logs / "benchmarks"
    if not bench.is_dir():
        raise UsageError(
            f"no benchmark folder {bench}: pass the run's config (--configfile, as given to snakemake) or its "
            "log folder (--logs <logdir>/<config name>-<hash>, the folder Snakemake's job logs name)"
        )
    jobs = read_benchmarks(bench)
    print(format_costs(jobs))
    if args.out:
        atomic_write_text(Path(args.out), jobs.to_csv(index=False))
        print(f"\none row per job: {args.out}")


def build_parser() -> argparse.ArgumentParser:
    """`arelbo` and its commands, each with the options defined beside it (`command`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("arelbo")
    except PackageNotFoundError:  # imported from a clone without an install
        installed = "not installed"
    parser = argparse.ArgumentParser(prog="arelbo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for spec in COMMANDS:
        p = sub.add_parser(spec.name, help=spec.help)
        if spec.config:
            _add_config_options(p)
        spec.options(p)
        p.set_defaults(func=spec.handler)
    return parser


def _model_id(text: str) -> str:
    # checked while parsing, before a command imports torch or picks its device; a plugin's ids are
    # registered by then (_preload_plugins)
    if text not in registry.MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose one of {', '.join(registry.model_ids())}")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number (at least 1)")
    return value


class _ConfigfileOnce(argparse.Action):
    """`--configfile A B` as Snakemake reads it. Snakemake keeps only the last of several `--configfile`
    flags (`--configfile A --configfile B` reads B alone), so a second flag is refused with the one
    spelling both tools read alike, rather than merged here and dropped there."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = list(getattr(namespace, "configfile_flag", None) or [])
        if given:
            files = " ".join(str(v) for v in [*given, *values])
            parser.error(
                f"--configfile is given more than once; snakemake would read only the last one's files "
                f"({' '.join(values)}), so the workflow and this command would not agree. Give every file "
                f"after one flag, in order: --configfile {files}"
            )
        namespace.configfile_flag = list(values)
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), *values])


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """`--configfile A B ...` (Snakemake's spelling, so one command line means one config in both
    tools; given once, as Snakemake reads only the last flag) and `--config A --config B`: every file
    lands in `args.config`, merged over config/config.yaml in the order given."""
    group = parser.add_argument_group("configuration")
    group.add_argument(
        "--configfile",
        dest="config",
        action=_ConfigfileOnce,
        nargs="+",
        metavar="FILE",
        help="YAML overlay(s) merged over config/config.yaml, in order (as snakemake --configfile A B)",
    )
    group.add_argument(
        "--config", dest="config", action="append", metavar="FILE", help="one overlay; may be repeated, in order"
    )


def _preload_plugins(argv: list[str] | None) -> None:
    """Register the plugins the command's config files name (and installed entry points) before
    the parser is built, so a plugin's ids are valid choices; a config error surfaces later, when
    the command loads its config."""
    pre = argparse.ArgumentParser(add_help=False)
    _add_config_options(pre)
    known, _ = pre.parse_known_args(argv)
    known.config = known.config or []
    from arelbo.core.config import DEFAULT_CONFIG, ConfigError, deep_merge, load_config_plugins, read_yaml

    try:
        raw = read_yaml(DEFAULT_CONFIG)
        for path in known.config:
            raw = deep_merge(raw, read_yaml(path))
        load_config_plugins(raw)
    except ConfigError as error:
        if "plugin" in str(error):
            raise


def main(argv: list[str] | None = None) -> int:
    # before anything imports torch: every allocation of the job is served by the kept heap
    allocator.configure()
    try:
        _preload_plugins(argv)
    except ArelboError as exc:  # a plugin that fails to load: before any command is known
        print(f"arelbo: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        args.func(args)
    except ArelboError as exc:  # a message that says what is wrong and how to fix it: no traceback
        print(f"arelbo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
