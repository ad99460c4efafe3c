"""From records to what a reader sees: tables (tidy, paper-shaped, LaTeX, comparison with the
paper), the paper's claims judged on a run, figures, and a finished run's measured costs.

Torch-free: depends on `arelbo.core` only.
"""
