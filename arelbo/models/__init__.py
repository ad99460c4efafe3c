"""The paper's models: the Appendix J and D networks, the 13 objectives of Table 2, the posterior
estimators of Table 3 (prior, GMMs, second-stage VAE), and the optimisation loop they share.

Depends on `arelbo.core` only; the job stages build on it.
"""
