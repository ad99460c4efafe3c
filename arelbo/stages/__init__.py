"""What the CLI's job commands run, one Snakemake rule each: provisioning and data preparation,
training a Table 3 model, the evaluation stages (encode, fit an estimator, sample, score), and
Section 3's study (Tables 1 and 5: train a grid point, its criteria, its figures).

Stages read and write the files `arelbo.core.layout` names; they build on `arelbo.models` and
`arelbo.metrics`, and hand records to `arelbo.reporting`.
"""
