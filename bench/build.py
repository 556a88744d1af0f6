"""The fusedrnn installation a worker imports, this one or another (run.py --baseline): how
its threads are set and which kernel build and settings it runs. Written against every
version of the package the benchmark may meet: what an older one lacks is left out."""
from __future__ import annotations

import hashlib
import importlib
from typing import Dict, List


def blas_threads() -> List[int]:
    from threadpoolctl import threadpool_info
    return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})


def _tuning():
    """fusedrnn._tuning, the owner of the settings, or None in an older installation."""
    try:
        return importlib.import_module("fusedrnn._tuning")
    except ImportError:
        return None


def fr_threads(threads: int) -> Dict[str, List[int]]:
    """Set fusedrnn's threads (and its BLAS's): `fusedrnn._tuning.set("num_threads", n)`, or
    an older installation's `fr.set_num_threads`; returns the counts in effect per pool."""
    import fusedrnn as fr
    tuning = _tuning()
    count = None
    if tuning is not None:
        tuning.set("num_threads", threads)
        count = tuning.get("num_threads")
    elif hasattr(fr, "set_num_threads"):
        fr.set_num_threads(threads)
        count = fr.get_num_threads() if hasattr(fr, "get_num_threads") else None
    out = {"blas": blas_threads()}
    if count is not None:
        out["fusedrnn"] = [int(count)]
    return out


# An older installation's settings: its _kernel setter, the value it may be set to while
# being read (the setters return the old value), and the name fusedrnn._tuning gives it.
_OLD_SETTERS = (("packed_max_rows", "set_packed_max_rows", 0), ("team_min_steps", "set_team_min_steps", 1),
                ("grad_rows", "set_team_grad_rows", 0))


def tuning_settings() -> Dict[str, int]:
    """Every tuning setting of the installation: `fusedrnn._tuning.get_all()` where the package
    has that module; for an older one the values its `_kernel` setters return (each set and
    restored at once) and its thread count."""
    import fusedrnn as fr
    tuning = _tuning()
    if tuning is not None:
        return {k: int(v) for k, v in tuning.get_all().items()}
    from fusedrnn import _kernel
    out: Dict[str, int] = {}
    if hasattr(fr, "get_num_threads"):
        out["num_threads"] = int(fr.get_num_threads())
    for name, setter, probe in _OLD_SETTERS:
        f = getattr(_kernel, setter, None)
        if f is not None:
            out[name] = int(f(probe))
            f(out[name])
    if hasattr(_kernel, "get_isa"):
        out["isa"] = int(_kernel.get_isa())
    return out


def kernel_id() -> dict:
    """The kernel's file and hash, its GEMM provider and its tuning settings (among them the
    batch bound of the packed path)."""
    import fusedrnn as fr
    from fusedrnn import _kernel
    with open(_kernel.__file__, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    tuning = tuning_settings()
    return {"kernel_so": _kernel.__file__, "kernel_sha256": digest, "gemm": fr.get_gemm(),
            "has_set_num_threads": hasattr(fr, "set_num_threads"),
            "packed_max_rows": tuning.get("packed_max_rows"), "tuning": tuning}
