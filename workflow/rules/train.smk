# One training job per dataset × model × seed.


rule train:
    input:
        data=lambda wc: dataset_meta(wc.dataset),
    output:
        model=layout.model_file(OUT, *CELL),
        log=layout.train_log(OUT, *CELL),
    log:
        layout.job_log(LOGS, "train", *CELL_LOG),
    benchmark:
        layout.job_benchmark(LOGS, "train", *CELL_LOG)
    threads: 2
    resources:
        **partition("gpu"),
        mem_mb=lambda wc: 8000 if wc.dataset == "mnist" else 32000,
        runtime=lambda wc: 240 if wc.dataset == "mnist" else 1440,
        gpu=1,
        gpu_slots=gpu_slots(whole_card_for_celeba=True),
    params:
        # recorded by Snakemake: a change of these settings re-runs exactly the affected trainings
        settings=tracked(
            "train.{dataset}",
            "train.lr_plateau",
            "hparams.{model}.{dataset}",
            "choices",
            *split_keys("{dataset}", "train", "val"),
        ),
        outdir=lambda wc, output: str(Path(output.model).parent),
    shell:
        "{ARELBO} train --config {CONFIG_FILE:q} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--seed {wildcards.seed} --out {params.outdir:q} --threads {threads} --no-progress > {log:q} 2>&1"
