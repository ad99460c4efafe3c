"""Where a number came from: written into every metric and criteria record, read by tables and claims.

A record's provenance is the code (git commit and whether the working tree had uncommitted changes),
the settings (a hash of the merged config), the data (a hash of the dataset cache's meta file, which
names the verified raw files and the array shapes) and the machine (device, torch and CUDA versions,
from `runtime.device_info`, the torch thread count included). Tables and claims built from records of
more than one commit or config hash, or of models trained with different thread counts, say so in their
captions (`mixed_provenance`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess

from arelbo.core.layout import REPO_ROOT

HASH_CHARS = 16
# Columns a tidy row may carry besides its value; tables and claims pass them through.
PROVENANCE_COLUMNS = (
    "commit",
    "dirty",
    "config_hash",
    "data_hash",
    "device",
    "device_name",
    "torch",
    "cuda",
    "precision",  # the arithmetic the value was computed in
    "threads",  # torch's CPU threads of the job that computed the value
    "train_threads",  # ... and of the training of its model
)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str:
    """The short commit of the code that ran, "unknown" outside a git checkout."""
    out = _git("rev-parse", "--short=12", "HEAD")
    return out.strip() if out and out.strip() else "unknown"


def git_dirty() -> bool | None:
    """Whether tracked files differ from the commit (results are then not reproducible from the
    commit alone); None outside a git checkout. Untracked files (results, logs) do not count."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())


def config_hash(raw: dict) -> str:
    """sha256 prefix of the merged config as canonical JSON: equal settings give equal hashes,
    whatever the key order or the files they were merged from."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def data_hash(cfg, dataset: str) -> str:
    """sha256 prefix of the dataset cache's meta.json (raw-file digests or CelebA listing, shapes);
    "missing" when the cache has not been built."""
    from arelbo.core.layout import dataset_cache_meta

    meta = dataset_cache_meta(cfg.resources, cfg.dataset_tag(dataset))
    return hashlib.sha256(meta.read_bytes()).hexdigest()[:HASH_CHARS] if meta.is_file() else "missing"


def provenance(cfg, dataset: str, device) -> dict:
    """The provenance fields of one record (see the module docstring)."""
    from arelbo.core.runtime import device_info

    return {
        "commit": git_commit(),
        "dirty": git_dirty(),
        "config_hash": config_hash(cfg.raw),
        "data_hash": data_hash(cfg, dataset),
        **device_info(device),
    }


def mixed_provenance(frame) -> list[str]:
    """Sentences saying which provenance fields differ between the rows of a tidy frame (a table or
    claim mixing commits or configs says so); [] when every row shares them."""
    notes = []
    for column, what in (("commit", "commits"), ("config_hash", "config hashes")):
        if column in frame:
            values = sorted({str(v) for v in frame[column].dropna()})
            if len(values) > 1:
                notes.append(f"built from records of {len(values)} {what} ({', '.join(values)})")
    if "train_threads" in frame:
        # the thread count changes how CPU sums are split, hence a trained model's last bits and every
        # number computed from it (docs/reliability.md, "What changes the numbers")
        counts = sorted({str(v) for v in frame["train_threads"].dropna()})
        if len(counts) > 1:
            notes.append(f"its models were trained with different torch thread counts ({', '.join(counts)})")
    if "dirty" in frame and frame["dirty"].map(lambda v: str(v).lower() == "true").any():
        notes.append("some records come from a working tree with uncommitted changes")
    return notes
