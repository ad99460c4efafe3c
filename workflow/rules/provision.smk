# Data, weights and FID reference statistics. Downloads are local rules: on a cluster the login
# node (which has the network) fetches them, compute nodes only read them.


localrules:
    provision_mnist,
    provision_inception,


rule provision_mnist:
    output:
        [str(layout.mnist_raw_dir(RES) / name) for name in layout.MNIST_RAW_FILES],
    log:
        f"{LOGS}/provision/mnist.log",
    benchmark:
        f"{LOGS}/benchmarks/provision_mnist.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "{ARELBO} provision mnist --config {CONFIG_FILE} > {log} 2>&1"


rule provision_inception:
    output:
        str(layout.inception_weights(RES)),
    log:
        f"{LOGS}/provision/inception.log",
    benchmark:
        f"{LOGS}/benchmarks/provision_inception.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{ARELBO} provision inception --config {CONFIG_FILE} > {log} 2>&1"


rule prepare_dataset:
    # Decode once into uint8 .npy caches (CelebA: 202,599 JPEGs cropped and resized; a stand-in is
    # generated first when the config asks for one).
    input:
        _prepare_inputs,
    output:
        f"{RES}/datasets/{{tag}}/meta.json",
    log:
        f"{LOGS}/provision/dataset_{{tag}}.log",
    benchmark:
        f"{LOGS}/benchmarks/prepare_dataset_{{tag}}.tsv"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        dataset=lambda wc: DATASET_OF_TAG[wc.tag],
        source=lambda wc: CFG.data.celeba.root if DATASET_OF_TAG[wc.tag] == "celeba" else "mnist",
    shell:
        "{ARELBO} provision data --dataset {params.dataset} --threads {threads} " "--config {CONFIG_FILE} > {log} 2>&1"


rule fid_reference:
    # Inception statistics of the reference split, computed once per dataset and count.
    input:
        weights=rules.provision_inception.output,
        data=f"{RES}/datasets/{{tag}}/meta.json",
    output:
        f"{RES}/fid/{{tag}}-{{split}}-n{{n}}.npz",
    log:
        f"{LOGS}/fid/reference_{{tag}}-{{split}}-n{{n}}.log",
    benchmark:
        f"{LOGS}/benchmarks/fid_reference_{{tag}}-{{split}}-n{{n}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=90,
        gpu=1,
        gpu_slots=gpu_slots(),
    params:
        dataset=lambda wc: DATASET_OF_TAG[wc.tag],
    shell:
        "{ARELBO} fid-reference --dataset {params.dataset} --output {output} " "--config {CONFIG_FILE} > {log} 2>&1"
