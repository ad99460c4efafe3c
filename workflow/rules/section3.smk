# Section 3 study: one training job and one criteria job per grid point × seed (Tables 1 and 5),
# and the figures drawn from the grid points they show.

SECTION3_DIR = f"{OUT}/sweeps/{{point}}/seed{{seed}}"


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
                models=[f"{layout.section3_dir(OUT, pid, '{seed}')}/model.pt" for pid in _ids],
                logs=[f"{layout.section3_dir(OUT, pid, '{seed}')}/train_log.csv" for pid in _ids],
            log:
                f"{LOGS}/sweeps/{_group}/batched-seed{{seed}}/train.log",
            benchmark:
                f"{LOGS}/benchmarks/sweeps/{_group}/batched-seed{{seed}}/train.tsv"
            threads: 2
            resources:
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
                "{ARELBO} section3-train-group --config {CONFIG_FILE} --group {params.group} --seed {wildcards.seed} "
                "--threads {threads} --no-progress > {log} 2>&1"

else:

    rule section3_train:
        input:
            data=lambda wc: dataset_meta("mnist"),
        output:
            model=f"{SECTION3_DIR}/model.pt",
            log=f"{SECTION3_DIR}/train_log.csv",
        log:
            f"{LOGS}/sweeps/{{point}}/seed{{seed}}/train.log",
        benchmark:
            f"{LOGS}/benchmarks/sweeps/{{point}}/seed{{seed}}/train.tsv"
        threads: 2
        resources:
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
            "{ARELBO} section3-train --config {CONFIG_FILE} --point {wildcards.point} --seed {wildcards.seed} "
            "--out {params.outdir} --threads {threads} --no-progress > {log} 2>&1"


rule section3_criteria:
    input:
        model=f"{SECTION3_DIR}/model.pt",
    output:
        f"{SECTION3_DIR}/criteria.json",
    log:
        f"{LOGS}/sweeps/{{point}}/seed{{seed}}/criteria.log",
    benchmark:
        f"{LOGS}/benchmarks/sweeps/{{point}}/seed{{seed}}/criteria.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
        gpu_slots=gpu_slots(),
    params:
        settings=tracked("section3.mi_batch_size", "section3.train_limit", *split_keys("mnist", "train")),
    shell:
        "{ARELBO} criteria --config {CONFIG_FILE} --model-file {input.model} --seed {wildcards.seed} "
        "--out {output} --threads {threads} > {log} 2>&1"


rule figure:
    # Figure 1 (perturbed decodings) and Figures 2/3 (t-SNE) from the first seed's models
    input:
        lambda wc: [section3_model(pid, CFG.seeds[0]) for pid in figure_points(int(wc.number))],
    output:
        report(
            f"{OUT}/figures/figure{{number}}.png",
            caption="../report/figure.rst",
            category="Section 3 figures",
            labels={"figure": "Figure {number}"},
        ),
    log:
        f"{LOGS}/figures/figure{{number}}.log",
    benchmark:
        f"{LOGS}/benchmarks/figures/figure{{number}}.tsv"
    wildcard_constraints:
        number="[123]",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=1,  # decodes and encodes with the grid points' networks on the config's device
        gpu_slots=gpu_slots(),
    params:
        seed=CFG.seeds[0],
        settings=tracked("section3.figures", "section3.train_limit", *split_keys("mnist", "train")),
    shell:
        "{ARELBO} figure {wildcards.number} --config {CONFIG_FILE} --models {input} --seed {params.seed} "
        "--out {output} > {log} 2>&1"
