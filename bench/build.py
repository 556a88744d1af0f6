"""The fusedrnn installation a worker imports, this one or another (run.py --baseline): how
its threads are set and which kernel build and settings it runs. Written against every
version of the package the benchmark may meet: what an older one lacks is left out."""
from __future__ import annotations

import hashlib
from typing import Dict, List


def blas_threads() -> List[int]:
    from threadpoolctl import threadpool_info
    return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})


def fr_threads(threads: int) -> Dict[str, List[int]]:
    """Set fusedrnn's threads (and its BLAS's); returns the counts in effect per pool."""
    import fusedrnn as fr
    if hasattr(fr, "set_num_threads"):
        fr.set_num_threads(threads)
    out = {"blas": blas_threads()}
    if hasattr(fr, "get_num_threads"):
        out["fusedrnn"] = [int(fr.get_num_threads())]
    return out


def kernel_id() -> dict:
    """The kernel's file and hash, its GEMM provider and the batch bound of its packed path."""
    import fusedrnn as fr
    from fusedrnn import _kernel
    with open(_kernel.__file__, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    packed = None
    if hasattr(_kernel, "set_packed_max_rows"):  # read it (set returns the old value)
        packed = _kernel.set_packed_max_rows(0)
        _kernel.set_packed_max_rows(packed)
    return {"kernel_so": _kernel.__file__, "kernel_sha256": digest, "gemm": fr.get_gemm(),
            "has_set_num_threads": hasattr(fr, "set_num_threads"), "packed_max_rows": packed}
