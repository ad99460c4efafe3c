"""What a plugin author runs: arelbo's conformance checks on this package's model and estimator."""

from arelbo import registry
from arelbo.testing import check_estimator, check_model


def setup_module():
    registry.load_plugin("arelbo_example_plugin")


def test_beta_vae_conforms():
    check_model("beta_vae")


def test_gmmdiag_conforms():
    check_estimator("gmmdiag")
