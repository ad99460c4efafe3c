"""Reading the data files of a results folder and of resources/ without running code, each verified
where it is read.

A torch file is read with `weights_only=True` (tensors, plain containers and scalars: nothing is
imported or called), an .npz with `allow_pickle=False`, a record as JSON. Code enters arelbo only as
the Python modules a config's `plugins:` list names, by design; a data file never brings any.

A file that cannot be read whole — truncated (a killed copy, a full disk), corrupt, or holding pickled
Python objects that only an unsafe load would rebuild (a file of an older arelbo, or a planted one) —
raises UnreadableFile: one message naming the file, what is wrong with it and the fix the caller gives
(usually: delete it and re-run). Torch-free until a torch file is read, as the rest of arelbo.core.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from arelbo.core.errors import ArelboError

# What a reader says about a file it refuses to unpickle: why arelbo will not read it.
UNSAFE = (
    "holds pickled Python objects, which only an unsafe load (one that can run code) would rebuild; "
    "arelbo reads data files as tensors, arrays and plain values only"
)


class UnreadableFile(ArelboError, RuntimeError):
    """A data file that is truncated, corrupt or unsafe to load; the message names it and the fix."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path} {problem}; {fix}")


def _corrupt(exc: BaseException) -> str:
    # the first sentence of the reader's error: enough to tell a cut file from a damaged one
    detail = str(exc).strip().splitlines()[0].split(". ")[0][:200] if str(exc).strip() else ""
    return f"is truncated or corrupt ({type(exc).__name__}{': ' + detail if detail else ''})"


def load_torch(path: str | os.PathLike, fix: str) -> Any:
    """torch.load of `path` onto the CPU with weights_only=True; UnreadableFile when it cannot."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not allow-list (e.g. os.system, a class of ours);
        # other unpickling failures are a damaged stream
        if "weights only load failed" in str(exc).lower():
            raise UnreadableFile(path, UNSAFE, fix) from None
        raise UnreadableFile(path, _corrupt(exc), fix) from None
    except Exception as exc:  # noqa: BLE001 - a zip without its directory, a short read, a bad record
        raise UnreadableFile(path, _corrupt(exc), fix) from None


def load_npz(path: str | os.PathLike, fix: str) -> dict:
    """Every array of the .npz at `path`, read in full (so a damaged member fails here, not later),
    with allow_pickle=False; UnreadableFile when it cannot."""
    import numpy as np

    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise UnreadableFile(path, "is not an .npz archive", fix)
        with z:
            arrays = {name: z[name] for name in z.files}
        if not all(isinstance(a, np.ndarray) for a in arrays.values()):
            raise UnreadableFile(path, "is a zip file but not an .npz of arrays", fix)
        return arrays
    except UnreadableFile:
        raise
    except FileNotFoundError:
        raise
    except ValueError as exc:
        # numpy's refusals of an object array or of a pickle both name allow_pickle
        if "allow_pickle" in str(exc):
            raise UnreadableFile(path, UNSAFE, fix) from None
        raise UnreadableFile(path, _corrupt(exc), fix) from None
    except Exception as exc:  # noqa: BLE001 - a zip without its directory, a bad CRC, a short member
        raise UnreadableFile(path, _corrupt(exc), fix) from None


def load_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON document at `path`; UnreadableFile when it is not one (a cut or damaged record)."""
    import json

    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableFile(path, _corrupt(exc), fix) from None
