# arelbo: the DAG over model × dataset × estimator that regenerates the paper's Tables 1, 3, 4, 5.
#
#   snakemake --cores 8 results/table3.tex                      # paper settings (config/config.yaml)
#   snakemake --cores 2 --configfile config/quick.yaml          # CPU-sized (`make quick`)
#   snakemake --profile profiles/slurm results/table3.tex       # a SLURM cluster
#
# Nothing heavy is imported here (no torch): cluster jobs re-parse this file.
import os

from snakemake.utils import min_version

min_version("9.0")


# The base config beside this file, whatever the working directory (`snakemake -s <clone>/Snakefile`);
# the paths inside configs stay relative to the working directory.
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/provision.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/section3.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets() + section3_targets() + report_targets(),
