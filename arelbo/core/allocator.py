"""The C allocator every arelbo process runs with: glibc's malloc kept from handing memory back.

Why. By default glibc serves every allocation above a dynamic threshold (128 KiB, rising to at most
32 MiB) with its own `mmap` and returns it with `munmap` when freed, and it trims the heap's top
whenever more than 128 KiB is free there. A training step or an Inception batch allocates and frees
the same large activation tensors every time, so each step maps fresh pages that the kernel must
fault in and zero again: on the 2-core development machine a third of `make quick`'s CPU time went to
the kernel (docs/engineering-notes.md, "The allocator"). Raising both thresholds keeps freed memory in
the process for the next step; it changes where memory comes from, never any arithmetic (a test holds
a training's model.pt bytes equal with and without it). The cost is that a process keeps its peak
heap until it exits, which a job does anyway.

Where. `configure()` runs first thing in `arelbo`'s command-line entry (every Snakemake rule, SLURM
job and suite subprocess runs `python -m arelbo …`) and in the test suite's processes, through
`mallopt`, before torch is imported. It leaves the allocator alone, and says so in `describe()`, when

- ``ARELBO_MALLOC=system`` is set (glibc's defaults, e.g. to measure them),
- ``LD_PRELOAD`` brings another allocator (jemalloc, tcmalloc, mimalloc: they do not read glibc's
  settings), or
- ``GLIBC_TUNABLES`` already sets glibc's malloc thresholds (the user's own values win),

and on a C library that is not glibc. `describe()` is recorded with every job's device information
(arelbo.core.runtime.device_info), so a record says which allocator its numbers were computed under.

Torch-free, standard library only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest value mallopt takes (an int): 2 GiB. Larger single tensors are still mapped, and
# unmapped when freed; no CPU job of this project allocates one.
KEPT_BYTES = 2**31 - 1
# The switch, and the value of it that keeps glibc's defaults
SWITCH = "ARELBO_MALLOC"
SYSTEM = "system"
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc", "hoard", "snmalloc")
_USERS_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.mmap_max")

_state: dict[str, str] = {}


def _decision(environ) -> tuple[bool, str]:
    """(whether to set the thresholds, the description recorded) for this environment."""
    preload = environ.get("LD_PRELOAD", "")
    brought = [name for name in OTHER_ALLOCATORS if name in preload.lower()]
    if brought:
        return False, f"{brought[0]} (LD_PRELOAD)"
    if environ.get(SWITCH, "").strip().lower() == SYSTEM:
        return False, f"glibc defaults ({SWITCH}={SYSTEM})"
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(name in tunables for name in _USERS_TUNABLES):
        return False, f"glibc, GLIBC_TUNABLES={tunables}"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False, "the C library's defaults (not glibc)"
    return True, f"glibc, mmap and trim thresholds {KEPT_BYTES} (arelbo)"


def configure(environ=None) -> str:
    """Keep glibc's malloc from returning freed memory to the kernel (see the module docstring), unless
    the environment says otherwise; idempotent. Returns `describe()`."""
    if _state:
        return _state["description"]
    want, description = _decision(os.environ if environ is None else environ)
    if want:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        accepted = libc.mallopt(_M_MMAP_THRESHOLD, KEPT_BYTES) and libc.mallopt(_M_TRIM_THRESHOLD, KEPT_BYTES)
        if not accepted:  # an old glibc caps the mmap threshold at 32 MiB: say what runs
            description = "glibc defaults (mallopt refused the thresholds)"
    _state["description"] = description
    return description


def describe() -> str:
    """Which allocator settings this process runs with, as recorded in its job's provenance."""
    if _state:
        return _state["description"]
    want, description = _decision(os.environ)
    return "glibc defaults (configure() not called in this process)" if want else description
