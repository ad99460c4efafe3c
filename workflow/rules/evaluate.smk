# Encode → posterior estimators → samples → metrics (one job each, so a cluster spreads them).

MODEL_DIR = f"{OUT}/models/{{dataset}}/{{model}}/seed{{seed}}"
SAMPLES = f"{OUT}/samples/{{dataset}}/{{model}}/seed{{seed}}/{{sampler}}"
METRICS = f"{OUT}/metrics/{{dataset}}/{{model}}/seed{{seed}}"
ESTIMATORS = f"{OUT}/estimators/{{dataset}}/{{model}}/seed{{seed}}"


wildcard_constraints:
    sampler=_alternatives(list(CFG.estimators) + ["interp_mid", "interp_random"]),
    pkl_estimator=_alternatives([e for e in CFG.estimators if e != "2ndvae"]) or "none",


rule encode:
    input:
        model=f"{MODEL_DIR}/model.pt",
    output:
        f"{MODEL_DIR}/latents.npz",
    log:
        f"{LOGS}/encode/{{dataset}}/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{LOGS}/benchmarks/encode/{{dataset}}/{{model}}/seed{{seed}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=1,
        gpu_slots=gpu_slots(),
    params:
        settings=tracked(*split_keys("{dataset}", "train", "test")),  # the images encoded
    shell:
        "{ARELBO} encode --config {CONFIG_FILE} --dataset {wildcards.dataset} --model-file {input.model} "
        "--out {output} > {log} 2>&1"


rule fit_estimator:
    # prior / GMM-10 / GMM-100 (scikit-learn) on the training encoder means
    input:
        f"{MODEL_DIR}/latents.npz",
    output:
        f"{ESTIMATORS}/{{pkl_estimator}}.pkl",
    log:
        f"{LOGS}/estimators/{{dataset}}/{{model}}/seed{{seed}}/{{pkl_estimator}}.log",
    benchmark:
        f"{LOGS}/benchmarks/estimators/{{dataset}}/{{model}}/seed{{seed}}/{{pkl_estimator}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=lambda wc: estimator_runtime(wc.dataset, wc.pkl_estimator),
    shell:
        "{ARELBO} fit --config {CONFIG_FILE} --estimator {wildcards.pkl_estimator} --latents {input} "
        "--seed {wildcards.seed} --out {output} > {log} 2>&1"


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
                [f"{OUT}/models/{_dataset}/{m}/seed{{seed}}/latents.npz" for m in _models],
            output:
                [f"{OUT}/estimators/{_dataset}/{m}/seed{{seed}}/2ndvae.pt" for m in _models],
            log:
                f"{LOGS}/estimators/{_dataset}/batched/seed{{seed}}/2ndvae.log",
            benchmark:
                f"{LOGS}/benchmarks/estimators/{_dataset}/batched/seed{{seed}}/2ndvae.tsv"
            threads: 2
            resources:
                mem_mb=8000,
                runtime=240,
                gpu=1,
                gpu_slots=gpu_slots(),
            params:
                settings=second_stage_settings,
            shell:
                "{ARELBO} fit --config {CONFIG_FILE} --estimator 2ndvae --latents {input} "
                "--seed {wildcards.seed} --out {output} > {log} 2>&1"

else:

    rule fit_second_stage:
        # Dai & Wipf's second-stage VAE on u = μ + σ⊙ε
        input:
            f"{MODEL_DIR}/latents.npz",
        output:
            f"{ESTIMATORS}/2ndvae.pt",
        log:
            f"{LOGS}/estimators/{{dataset}}/{{model}}/seed{{seed}}/2ndvae.log",
        benchmark:
            f"{LOGS}/benchmarks/estimators/{{dataset}}/{{model}}/seed{{seed}}/2ndvae.tsv"
        threads: 2
        resources:
            mem_mb=8000,
            runtime=240,
            gpu=1,
            gpu_slots=gpu_slots(),
        params:
            settings=second_stage_settings,
        shell:
            "{ARELBO} fit --config {CONFIG_FILE} --estimator 2ndvae --latents {input} "
            "--seed {wildcards.seed} --out {output} > {log} 2>&1"


if CFG.fid.batched:
    # One job per (dataset, model, seed) samples every sampler and scores each (fid.batched): the same
    # files as the per-cell rules below, with torch, torchvision and Inception started once instead of
    # once per cell (~10 s a start on a CPU). The samplers depend on the dataset (Table 3's columns)
    # and on whether the prior is defined, so there is one rule per dataset and kind of model.
    for _dataset in CFG.datasets:
        for _models in (
            [m for m in CFG.models if m not in NO_PRIOR_MODELS],
            [m for m in CFG.models if m in NO_PRIOR_MODELS],
        ):
            if not _models:
                continue
            _samplers = model_samplers(_dataset, _models[0])
            _base = f"{{dataset}}/{{model}}/seed{{seed}}"
            _outputs = {}
            for _s in _samplers:
                _outputs[f"npz_{_s}"] = f"{OUT}/samples/{_base}/{_s}.npz"
                _outputs[f"png_{_s}"] = report(
                    f"{OUT}/samples/{_base}/{_s}.png",
                    caption="../report/samples_per_model.rst",
                    category="Samples",
                    subcategory=_dataset,
                    labels={"model": "{model}", "sampler": _s, "seed": "{seed}"},
                )
                _outputs[f"fid_{_s}"] = f"{OUT}/metrics/{_base}/fid_{_s}.json"
            _sources = {
                (
                    _s if _s != "2ndvae" else "second_stage"
                ): f"{OUT}/estimators/{_base}/{_s}.{'pt' if _s == '2ndvae' else 'pkl'}"
                for _s in _samplers
                if not _s.startswith("interp_")
            }

            rule:
                name:
                    f"sample_and_score_{_dataset}_{'with' if _models[0] not in NO_PRIOR_MODELS else 'without'}_prior"
                input:
                    **_sources,
                    model=f"{OUT}/models/{_base}/model.pt",
                    latents=f"{OUT}/models/{_base}/latents.npz",
                    reference=fid_reference_file(_dataset),
                    weights=rules.provision_inception.output,
                output:
                    **_outputs,
                log:
                    f"{LOGS}/evaluate/{_base}.log",
                benchmark:
                    f"{LOGS}/benchmarks/evaluate/{_base}.tsv"
                wildcard_constraints:
                    dataset=_dataset,
                    model=_alternatives(_models),
                threads: 2
                resources:
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
                    "{ARELBO} sample-and-score --config {CONFIG_FILE} --dataset {wildcards.dataset} "
                    "--model {wildcards.model} --seed {wildcards.seed} --samplers {params.samplers} > {log} 2>&1"

else:

    # One sample job and one FID job per cell (the default: a cluster spreads them).
    rule sample:
        input:
            unpack(_sampler_source),
            model=f"{MODEL_DIR}/model.pt",
        output:
            npz=f"{SAMPLES}.npz",
            png=report(
                f"{SAMPLES}.png",
                caption="../report/samples.rst",
                category="Samples",
                subcategory="{dataset}",
                labels={"model": "{model}", "sampler": "{sampler}", "seed": "{seed}"},
            ),
        log:
            f"{LOGS}/samples/{{dataset}}/{{model}}/seed{{seed}}/{{sampler}}.log",
        benchmark:
            f"{LOGS}/benchmarks/samples/{{dataset}}/{{model}}/seed{{seed}}/{{sampler}}.tsv"
        threads: 1
        resources:
            mem_mb=8000,
            runtime=30,
            gpu=1,
            gpu_slots=gpu_slots(),
        params:
            source=_sampler_flag,
            settings=tracked("fid.n_samples"),
        shell:
            "{ARELBO} sample --config {CONFIG_FILE} --dataset {wildcards.dataset} --model-file {input.model} "
            "--sampler {wildcards.sampler} --seed {wildcards.seed} {params.source} --out {output.npz} > {log} 2>&1"

    rule metric_fid:
        input:
            samples=f"{SAMPLES}.npz",
            reference=lambda wc: fid_reference_file(wc.dataset),
            weights=rules.provision_inception.output,
        output:
            f"{METRICS}/fid_{{sampler}}.json",
        log:
            f"{LOGS}/metrics/{{dataset}}/{{model}}/seed{{seed}}/fid_{{sampler}}.log",
        benchmark:
            f"{LOGS}/benchmarks/metrics/{{dataset}}/{{model}}/seed{{seed}}/fid_{{sampler}}.tsv"
        threads: 2
        resources:
            mem_mb=8000,
            runtime=60,
            gpu=1,
            gpu_slots=gpu_slots(),
        params:
            settings=tracked(
                "fid.n_samples", "fid.reference_split", "fid.reference_count", *split_keys("{dataset}", "test")
            ),
        shell:
            "{ARELBO} metric fid_{wildcards.sampler} --config {CONFIG_FILE} --dataset {wildcards.dataset} "
            "--model {wildcards.model} --seed {wildcards.seed} --samples {input.samples} --out {output} > {log} 2>&1"


rule metric_mse:
    input:
        model=f"{MODEL_DIR}/model.pt",
    output:
        f"{METRICS}/mse.json",
    log:
        f"{LOGS}/metrics/{{dataset}}/{{model}}/seed{{seed}}/mse.log",
    benchmark:
        f"{LOGS}/benchmarks/metrics/{{dataset}}/{{model}}/seed{{seed}}/mse.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=1,
        gpu_slots=gpu_slots(),
    params:
        settings=tracked(*split_keys("{dataset}", "test")),  # the test split MSE is measured on
    shell:
        "{ARELBO} metric mse --config {CONFIG_FILE} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--seed {wildcards.seed} --model-file {input.model} --out {output} > {log} 2>&1"
