# Data, weights and FID reference statistics. Downloads are local rules: on a cluster the login
# node (which has the network) fetches them, compute nodes only read them.


localrules:
    provision_mnist,
    provision_inception,


rule provision_mnist:
    output:
        [layout.mnist_raw_dir(RES) / name for name in layout.MNIST_RAW_FILES],
    log:
        layout.job_log(LOGS, "provision", "mnist"),
    benchmark:
        layout.job_benchmark(LOGS, "provision_mnist")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "{ARELBO} provision mnist --config {CONFIG_FILE:q} > {log:q} 2>&1"


rule provision_inception:
    output:
        layout.inception_weights(RES),
    log:
        layout.job_log(LOGS, "provision", "inception"),
    benchmark:
        layout.job_benchmark(LOGS, "provision_inception")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{ARELBO} provision inception --config {CONFIG_FILE:q} > {log:q} 2>&1"


rule prepare_dataset:
    # Decode once into uint8 .npy caches (CelebA: 202,599 JPEGs cropped and resized; a stand-in is
    # generated first when the config asks for one).
    input:
        _prepare_inputs,
    output:
        layout.dataset_cache_meta(RES, "{tag}"),
    log:
        layout.job_log(LOGS, "provision", "dataset_{tag}"),
    benchmark:
        layout.job_benchmark(LOGS, "prepare_dataset_{tag}")
    threads: 4
    resources:
        **partition("cpu"),
        mem_mb=8000,
        runtime=120,
    params:
        dataset=lambda wc: DATASET_OF_TAG[wc.tag],
        source=lambda wc: CFG.data.celeba.root if DATASET_OF_TAG[wc.tag] == "celeba" else "mnist",
    shell:
        "{ARELBO} provision data --dataset {params.dataset:q} --threads {threads} --config {CONFIG_FILE:q} > {log:q} 2>&1"


rule fid_reference:
    # Inception statistics of the reference split, computed once per dataset and count.
    input:
        weights=rules.provision_inception.output,
        data=layout.dataset_cache_meta(RES, "{tag}"),
    output:
        layout.fid_reference(RES, "{tag}", "{split}", "{n}"),
    log:
        layout.job_log(LOGS, "fid", "reference_{tag}-{split}-n{n}"),
    benchmark:
        layout.job_benchmark(LOGS, "fid_reference_{tag}-{split}-n{n}")
    threads: 2
    resources:
        **partition("gpu"),
        mem_mb=8000,
        runtime=90,
        gpu=1,
        gpu_slots=gpu_slots(),
    params:
        dataset=lambda wc: DATASET_OF_TAG[wc.tag],
    shell:
        "{ARELBO} fid-reference --dataset {params.dataset:q} --output {output:q} --config {CONFIG_FILE:q} > {log:q} 2>&1"
