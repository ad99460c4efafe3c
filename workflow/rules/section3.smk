# Section 3 study: one training job and one criteria job per grid point × seed (Tables 1 and 5),
# and the figures drawn from the grid points they show.

# A grid point's job logs: <stage>/{point}/seed{seed}/<job> (the stage folder keeps the outputs' name).
POINT_LOG = (layout.SECTION3_FOLDER, "{point}", layout.seed_folder("{seed}"))


wildcard_constraints:
    point="|".join(re.escape(p) for p in SECTION3_POINTS) or "none",


if CFG.section3.batched:
    # One job per group of grid points (section3.batched): the group's points train as one
    # vectorised training and write the same files as one section3_train job per point would.
    for _group in layout.SECTION3_GROUPS:
        _ids = [pid for pid, p in SECTION3_POINTS.items() if p.group == _group]
        if not _ids:
            continue

        rule:
            name:
                layout.section3_group_rule(_group)
            input:
                data=lambda wc: dataset_meta("mnist"),
            output:
                models=[layout.section3_file(OUT, pid, "{seed}", layout.MODEL_FILE) for pid in _ids],
                logs=[layout.section3_file(OUT, pid, "{seed}", layout.TRAIN_LOG) for pid in _ids],
            log:
                layout.job_log(LOGS, layout.SECTION3_FOLDER, _group, layout.batched_seed_folder("{seed}"), "train"),
            benchmark:
                layout.job_benchmark(
                    LOGS, layout.SECTION3_FOLDER, _group, layout.batched_seed_folder("{seed}"), "train"
                )
            threads: 2
            resources:
                **partition("gpu"),
                mem_mb=16000,
                runtime=720,
                gpu=1,
                gpu_slots=gpu_slots(),
            params:
                settings=tracked(
                    "section3.train",
                    "section3.train_limit",
                    "section3.latent_dim",
                    *split_keys("mnist", "train", "val"),
                ),
                group=_group,
            shell:
                "{ARELBO} section3-train-group --config {CONFIG_FILE:q} --group {params.group:q} --seed {wildcards.seed} "
                "--threads {threads} --no-progress > {log:q} 2>&1"

else:

    rule section3_train:
        input:
            data=lambda wc: dataset_meta("mnist"),
        output:
            model=layout.section3_file(OUT, "{point}", "{seed}", layout.MODEL_FILE),
            log=layout.section3_file(OUT, "{point}", "{seed}", layout.TRAIN_LOG),
        log:
            layout.job_log(LOGS, *POINT_LOG, "train"),
        benchmark:
            layout.job_benchmark(LOGS, *POINT_LOG, "train")
        threads: 2
        resources:
            **partition("gpu"),
            mem_mb=8000,
            runtime=360,
            gpu=1,
            gpu_slots=gpu_slots(),
        params:
            # recorded by Snakemake: changing the study's training settings re-runs the grid
            settings=tracked(
                "section3.train", "section3.train_limit", "section3.latent_dim", *split_keys("mnist", "train", "val")
            ),
            outdir=lambda wc, output: str(Path(output.model).parent),
        shell:
            "{ARELBO} section3-train --config {CONFIG_FILE:q} --point {wildcards.point} --seed {wildcards.seed} "
            "--out {params.outdir:q} --threads {threads} --no-progress > {log:q} 2>&1"


rule section3_criteria:
    input:
        model=layout.section3_file(OUT, "{point}", "{seed}", layout.MODEL_FILE),
    output:
        layout.section3_file(OUT, "{point}", "{seed}", layout.CRITERIA_FILE),
    log:
        layout.job_log(LOGS, *POINT_LOG, "criteria"),
    benchmark:
        layout.job_benchmark(LOGS, *POINT_LOG, "criteria")
    threads: 2
    resources:
        **partition("gpu"),
        mem_mb=8000,
        runtime=60,
        gpu=1,
        gpu_slots=gpu_slots(),
    params:
        settings=tracked("section3.mi_batch_size", "section3.train_limit", *split_keys("mnist", "train")),
    shell:
        "{ARELBO} criteria --config {CONFIG_FILE:q} --model-file {input.model:q} --seed {wildcards.seed} "
        "--out {output:q} --threads {threads} > {log:q} 2>&1"


rule figure:
    # Figure 1 (perturbed decodings) and Figures 2/3 (t-SNE) from the first seed's models
    input:
        lambda wc: [section3_model(pid, CFG.seeds[0]) for pid in figure_points(int(wc.number))],
    output:
        report(
            layout.figure_path(OUT, "figure{number}"),
            caption="../report/figure.rst",
            category="Section 3 figures",
            labels={"figure": "Figure {number}"},
        ),
    log:
        layout.job_log(LOGS, "figures", "figure{number}"),
    benchmark:
        layout.job_benchmark(LOGS, "figures", "figure{number}")
    wildcard_constraints:
        number="[123]",
    threads: 2
    resources:
        **partition("gpu"),
        mem_mb=8000,
        runtime=30,
        gpu=1,  # decodes and encodes with the grid points' networks on the config's device
        gpu_slots=gpu_slots(),
    params:
        seed=CFG.seeds[0],
        settings=tracked("section3.figures", "section3.train_limit", *split_keys("mnist", "train")),
    shell:
        "{ARELBO} figure {wildcards.number} --config {CONFIG_FILE:q} --models {input:q} --seed {params.seed:q} "
        "--out {output:q} > {log:q} 2>&1"
