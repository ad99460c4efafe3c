"""The torch-free core: the typed config, the output layout, the registry of datasets, models and
estimators, runtime helpers (devices, atomic writes, seeding), provenance, and the data-only readers of result
files (safeload).

The Snakefile imports these modules while it parses the workflow — on a login node, and again in
every cluster job — so nothing here imports torch or torchvision, nor anything outside this package
(tests/test_layering.py checks both). Torch-using helpers import torch inside the function.
"""
