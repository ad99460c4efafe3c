"""Evaluation metrics (FID, ...)."""
