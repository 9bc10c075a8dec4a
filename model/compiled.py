"""How the project's compiled loops are compiled (numba): :data:`njit`, with the rule for keeping
compiled code between processes. The loops themselves live beside the code they serve
(:mod:`model.mesh.kernels`, :mod:`model.runtime.detector_kernels`).

A loop is compiled on its first call and releases the GIL while it runs when declared so
(``nogil=True``), so the service's CPU threads run them side by side. Nothing is written to disk,
unless ``NUMBA_CACHE_DIR`` names a folder: then the compiled code is kept there and later processes
load it instead.
"""

from __future__ import annotations

import os
from functools import partial

import numpy as np
from numba import njit as _njit


def keeps_compiled_code() -> bool:
    """Whether compiled code is kept between processes: only where the user asked for it
    (``NUMBA_CACHE_DIR``; the service's images do not) and that folder can be written (numba
    would refuse to compile a loop that is to be kept nowhere: a read-only home, say)."""
    folder = os.environ.get("NUMBA_CACHE_DIR")
    if not folder:
        return False
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


njit = partial(_njit, cache=keeps_compiled_code())


def read_only(array: np.ndarray) -> np.ndarray:
    """A C-contiguous, read-only plain-ndarray view of ``array`` (a copy only where it is not contiguous):
    decoded photos are read-only, and numba compiles a loop once per array kind, so every image a loop
    reads is passed as this one kind (one compiled variant, warmed up once, for all)."""
    view = np.ascontiguousarray(array).view(np.ndarray)
    view.flags.writeable = False
    return view
