# Encode → posterior estimators → samples → metrics (one job each, so a cluster spreads them).


wildcard_constraints:
    sampler=_alternatives(list(CFG.estimators) + ["interp_mid", "interp_random"]),
    pkl_estimator=_alternatives([e for e in CFG.estimators if e != "2ndvae"]) or "none",


rule encode:
    input:
        model=layout.model_file(OUT, *CELL),
    output:
        layout.latents_file(OUT, *CELL),
    log:
        layout.job_log(LOGS, "encode", *CELL_LOG),
    benchmark:
        layout.job_benchmark(LOGS, "encode", *CELL_LOG)
    threads: 2
    resources:
        **partition("gpu"),
        mem_mb=8000,
        runtime=30,
        gpu=1,
        gpu_slots=gpu_slots(),
    params:
        settings=tracked(*split_keys("{dataset}", "train", "test")),  # the images encoded
    shell:
        "{ARELBO} encode --config {CONFIG_FILE:q} --dataset {wildcards.dataset} --model-file {input.model:q} "
        "--out {output:q} > {log:q} 2>&1"


rule fit_estimator:
    # prior / GMM-10 / GMM-100 (scikit-learn) on the training encoder means
    input:
        layout.latents_file(OUT, *CELL),
    output:
        layout.estimator_path(OUT, *CELL, "{pkl_estimator}"),
    log:
        layout.job_log(LOGS, "estimators", *CELL_LOG, "{pkl_estimator}"),
    benchmark:
        layout.job_benchmark(LOGS, "estimators", *CELL_LOG, "{pkl_estimator}")
    threads: 2
    resources:
        **partition("cpu"),
        mem_mb=8000,
        runtime=lambda wc: estimator_runtime(wc.dataset, wc.pkl_estimator),
    shell:
        "{ARELBO} fit --config {CONFIG_FILE:q} --estimator {wildcards.pkl_estimator} --latents {input:q} "
        "--seed {wildcards.seed} --out {output:q} > {log:q} 2>&1"


if CFG.second_stage.batched:
    # One job per (dataset, seed) fits the second-stage VAEs of all the dataset's models as one
    # vectorised training (second_stage.batched): each model's 2ndvae.pt as fit_second_stage writes it.
    for _dataset in CFG.datasets:
        _models = [m for m in CFG.models if "2ndvae" in model_samplers(_dataset, m)]
        if not _models:
            continue

        rule:
            name:
                f"fit_second_stages_{_dataset}"
            input:
                [layout.latents_file(OUT, _dataset, m, "{seed}") for m in _models],
            output:
                [layout.estimator_path(OUT, _dataset, m, "{seed}", "2ndvae") for m in _models],
            log:
                layout.job_log(LOGS, "estimators", _dataset, "batched", layout.seed_folder("{seed}"), "2ndvae"),
            benchmark:
                layout.job_benchmark(LOGS, "estimators", _dataset, "batched", layout.seed_folder("{seed}"), "2ndvae")
            threads: 2
            resources:
                **partition("gpu"),
                mem_mb=8000,
                runtime=240,
                gpu=1,
                gpu_slots=gpu_slots(),
            params:
                settings=second_stage_settings,
            shell:
                "{ARELBO} fit --config {CONFIG_FILE:q} --estimator 2ndvae --latents {input:q} "
                "--seed {wildcards.seed} --out {output:q} > {log:q} 2>&1"

else:

    rule fit_second_stage:
        # Dai & Wipf's second-stage VAE on u = μ + σ⊙ε
        input:
            layout.latents_file(OUT, *CELL),
        output:
            layout.estimator_path(OUT, *CELL, "2ndvae"),
        log:
            layout.job_log(LOGS, "estimators", *CELL_LOG, "2ndvae"),
        benchmark:
            layout.job_benchmark(LOGS, "estimators", *CELL_LOG, "2ndvae")
        threads: 2
        resources:
            **partition("gpu"),
            mem_mb=8000,
            runtime=240,
            gpu=1,
            gpu_slots=gpu_slots(),
        params:
            settings=second_stage_settings,
        shell:
            "{ARELBO} fit --config {CONFIG_FILE:q} --estimator 2ndvae --latents {input:q} "
            "--seed {wildcards.seed} --out {output:q} > {log:q} 2>&1"


if CFG.fid.batched:
    # One job per (dataset, model, seed) samples every sampler and scores each (fid.batched): the same
    # files as the per-cell rules below, with torch, torchvision and Inception started once instead of
    # once per cell (seconds a start on a CPU). The samplers depend on the dataset (Table 3's columns)
    # and on whether the prior is defined, so there is one rule per dataset and kind of model.
    for _dataset in CFG.datasets:
        for _models in (
            [m for m in CFG.models if m not in NO_PRIOR_MODELS],
            [m for m in CFG.models if m in NO_PRIOR_MODELS],
        ):
            if not _models:
                continue
            _samplers = model_samplers(_dataset, _models[0])
            _outputs = {}
            for _s in _samplers:
                _outputs[f"npz_{_s}"] = layout.samples_path(OUT, *CELL, _s)
                _outputs[f"png_{_s}"] = report(
                    layout.sample_grid_path(OUT, *CELL, _s),
                    caption="../report/samples_per_model.rst",
                    category="Samples",
                    subcategory=_dataset,
                    labels={"model": "{model}", "sampler": _s, "seed": "{seed}"},
                )
                _outputs[f"fid_{_s}"] = layout.metric_path(OUT, *CELL, f"fid_{_s}")
            _sources = {
                (_s if _s != "2ndvae" else "second_stage"): layout.estimator_path(OUT, *CELL, _s)
                for _s in _samplers
                if not _s.startswith("interp_")
            }

            rule:
                name:
                    f"sample_and_score_{_dataset}_{'with' if _models[0] not in NO_PRIOR_MODELS else 'without'}_prior"
                input:
                    **_sources,
                    model=layout.model_file(OUT, *CELL),
                    latents=layout.latents_file(OUT, *CELL),
                    reference=fid_reference_file(_dataset),
                    weights=rules.provision_inception.output,
                output:
                    **_outputs,
                log:
                    layout.job_log(LOGS, "evaluate", *CELL_LOG),
                benchmark:
                    layout.job_benchmark(LOGS, "evaluate", *CELL_LOG)
                wildcard_constraints:
                    dataset=_dataset,
                    model=_alternatives(_models),
                threads: 2
                resources:
                    **partition("gpu"),
                    mem_mb=8000,
                    runtime=60 * len(_samplers),
                    gpu=1,
                    gpu_slots=gpu_slots(),
                params:
                    samplers=" ".join(_samplers),
                    settings=tracked(
                        "fid.n_samples", "fid.reference_split", "fid.reference_count", *split_keys(_dataset, "test")
                    ),
                shell:
                    "{ARELBO} sample-and-score --config {CONFIG_FILE:q} --dataset {wildcards.dataset} "
                    "--model {wildcards.model} --seed {wildcards.seed} --samplers {params.samplers} > {log:q} 2>&1"

else:

    # One sample job and one FID job per cell (the default: a cluster spreads them).
    rule sample:
        input:
            unpack(_sampler_source),
            model=layout.model_file(OUT, *CELL),
        output:
            npz=layout.samples_path(OUT, *CELL, "{sampler}"),
            png=report(
                layout.sample_grid_path(OUT, *CELL, "{sampler}"),
                caption="../report/samples.rst",
                category="Samples",
                subcategory="{dataset}",
                labels={"model": "{model}", "sampler": "{sampler}", "seed": "{seed}"},
            ),
        log:
            layout.job_log(LOGS, "samples", *CELL_LOG, "{sampler}"),
        benchmark:
            layout.job_benchmark(LOGS, "samples", *CELL_LOG, "{sampler}")
        threads: 1
        resources:
            **partition("gpu"),
            mem_mb=8000,
            runtime=30,
            gpu=1,
            gpu_slots=gpu_slots(),
        params:
            source=_sampler_flag,
            settings=tracked("fid.n_samples"),
        shell:
            "{ARELBO} sample --config {CONFIG_FILE:q} --dataset {wildcards.dataset} --model-file {input.model:q} "
            "--sampler {wildcards.sampler} --seed {wildcards.seed} {params.source} --out {output.npz:q} > {log:q} 2>&1"

    rule metric_fid:
        input:
            samples=layout.samples_path(OUT, *CELL, "{sampler}"),
            reference=lambda wc: fid_reference_file(wc.dataset),
            weights=rules.provision_inception.output,
        output:
            layout.metric_path(OUT, *CELL, "fid_{sampler}"),
        log:
            layout.job_log(LOGS, "metrics", *CELL_LOG, "fid_{sampler}"),
        benchmark:
            layout.job_benchmark(LOGS, "metrics", *CELL_LOG, "fid_{sampler}")
        threads: 2
        resources:
            **partition("gpu"),
            mem_mb=8000,
            runtime=60,
            gpu=1,
            gpu_slots=gpu_slots(),
        params:
            settings=tracked(
                "fid.n_samples", "fid.reference_split", "fid.reference_count", *split_keys("{dataset}", "test")
            ),
        shell:
            "{ARELBO} metric fid_{wildcards.sampler} --config {CONFIG_FILE:q} --dataset {wildcards.dataset} "
            "--model {wildcards.model} --seed {wildcards.seed} --samples {input.samples:q} --out {output:q} > {log:q} 2>&1"


rule metric_mse:
    input:
        model=layout.model_file(OUT, *CELL),
    output:
        layout.metric_path(OUT, *CELL, "mse"),
    log:
        layout.job_log(LOGS, "metrics", *CELL_LOG, "mse"),
    benchmark:
        layout.job_benchmark(LOGS, "metrics", *CELL_LOG, "mse")
    threads: 2
    resources:
        **partition("gpu"),
        mem_mb=8000,
        runtime=30,
        gpu=1,
        gpu_slots=gpu_slots(),
    params:
        settings=tracked(*split_keys("{dataset}", "test")),  # the test split MSE is measured on
    shell:
        "{ARELBO} metric mse --config {CONFIG_FILE:q} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--seed {wildcards.seed} --model-file {input.model:q} --out {output:q} > {log:q} 2>&1"
