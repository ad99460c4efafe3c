"""Before a run: what a config will cost on a device kind (`arelbo plan`), from the workflow's job
list and measured or projected per-step costs.
"""
