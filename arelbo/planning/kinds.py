"""The device kinds `arelbo plan` knows: the rows of arelbo/reference/costs.yaml. Only yaml is imported
here, so that the command line can list the kinds in its help without loading the planner."""

from __future__ import annotations

import yaml

from arelbo.core.layout import reference_file

COSTS = reference_file("costs.yaml")


def device_kinds() -> dict[str, dict]:
    """Every device kind of costs.yaml with its row."""
    return yaml.safe_load(COSTS.read_text())


def default_cores(kind: str) -> int:
    """The cores a plan assumes when not told: a GPU kind's host (its row's `host_cores`), else this
    machine's."""
    import os

    return int(device_kinds()[kind].get("host_cores") or os.cpu_count() or 1)
