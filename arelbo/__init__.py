"""arelbo: reproduction harness for the AR-ELBO paper."""

__version__ = "0.1.0"
