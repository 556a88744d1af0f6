"""The competitors' worker processes. Each serves one competitor at one thread count, kept
alive for the whole run: `Worker` starts and talks to one from the parent, `serve` is its loop,
and `work_<competitor>` times one job."""
from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from typing import Optional

import numpy as np

from build import blas_threads, fr_threads, kernel_id
from cases import MODES, Case
from problems import make_fr, make_torch, maxabs, onnx_model, ort_session, params_of
import reduced
import streaming
from timing import cpu_busy_seconds, measure, _own_cpu

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RUN_PY = os.path.join(HERE, "run.py")

# Each worker process serves one competitor at one thread count. It reads one JSON job per
# line on stdin ({"case": ..., "problem": path, "budget": s, "min_rep": n, "max_rep": n,
# optionally "warmup": n, "section": "streaming" for that section's jobs, "round": r})
# and writes one JSON line back ({"version", "threads": {pool: [counts]}, "timings": {...}}).
def work_fusedrnn(case: Case, threads: int, problem, timer) -> dict:
    from threadpoolctl import threadpool_limits
    import fusedrnn as fr
    layer = make_fr(case, params_of(problem, "fusedrnn"))
    x, dy = problem["x"], problem["dy"]
    # this build against the output checked before timing (another build may be timed too)
    y, _ = layer.forward(x, training=False)
    agree = {"check_y_abs": maxabs(y, problem["check.y"])} if "check.y" in problem else {}

    def inference():
        layer.forward(x, training=False)

    def train():
        layer.zero_grad()
        layer.forward(x)
        layer.backward(dy)

    with threadpool_limits(threads, "blas"):
        th = fr_threads(threads)
        timings = {"inference": timer(inference), "train": timer(train)}
    return {"version": fr.__version__, "threads": th, "timings": timings, **agree, **kernel_id()}


def work_torch(case: Case, threads: int, problem, timer) -> dict:
    import torch
    torch.set_num_threads(threads)
    module = make_torch(case, params_of(problem, "torch"))
    x = torch.from_numpy(problem["x"])
    x_train = x.clone().requires_grad_()
    dy = torch.from_numpy(problem["dy"])

    def inference():
        with torch.inference_mode():
            module(x)

    def train():
        module.zero_grad(set_to_none=True)
        x_train.grad = None
        y, _ = module(x_train)
        y.backward(dy)

    timings = {"inference": timer(inference), "train": timer(train)}
    return {"version": torch.__version__, "threads": {"intra-op": [torch.get_num_threads()]},
            "timings": timings, "config": torch.__config__.parallel_info().splitlines()[:6]}


def work_ort(case: Case, threads: int, problem, timer) -> dict:
    import onnxruntime as ort
    model = onnx_model(case, params_of(problem, "fusedrnn"))
    sess = ort_session(model, threads)
    feed = {"X": problem["x"]}
    try:
        timings = {"inference": timer(lambda: sess.run(["Y"], feed))}
        n = sess.get_session_options().intra_op_num_threads
    finally:
        del sess  # destroys ORT's (spinning) thread pool before the next job
    return {"version": ort.__version__, "threads": {"intra-op": [n]}, "timings": timings}


def work_oracle(case: Case, threads: int, problem, timer) -> dict:
    from threadpoolctl import threadpool_limits
    from fusedrnn import reference as ref
    params = params_of(problem, "fusedrnn")
    x, dy = problem["x"], problem["dy"]

    def inference():
        ref.lstm_forward(x, params, None, None)

    def train():
        _, _, _, cache = ref.lstm_forward(x, params, None, None)
        ref.lstm_backward(dy, None, None, cache)

    with threadpool_limits(threads, "blas"):
        th = {"blas": blas_threads()}
        timings = {"inference": timer(inference), "train": timer(train)}
    return {"version": np.__version__, "threads": th, "timings": timings}


def floor_calls(case: Case, train: bool):
    """The GEMMs of the case, alone, as (C, A, B, tA, tB, M, N, K, beta) on flat buffers:
    per cell the input GEMM (TB x I x G), T recurrent GEMMs (B x R x G), with projection
    T projection GEMMs (B x H x P); training adds T recurrent backward GEMMs (B x G x R)
    (with projection T more (B x P x H)), dW_x (G x TB x I), dW_v (G x TB x R), dx
    (TB x G x I) (and dW_qv (P x TB x H)). G = 4H for the LSTM, 3H for the GRU (whose
    recurrent products are W_h h[n-1], and R = H)."""
    dt = np.dtype(case.dtype)
    rng = np.random.default_rng(1)
    T, B, H, P, R = case.T, case.B, case.H, case.P, case.R
    G, TB = case.gates * H, case.T * case.B

    def buf(n):
        return rng.standard_normal(n).astype(dt)

    calls = []
    for _, _, I in case.cells():
        X, W_x, W_v, gates = buf(TB * I), buf(G * I), buf(G * R), buf(TB * G)
        v_prev, W_qv, v_n, q_n = buf(B * R), buf(P * H), buf(B * H), buf(B * R)
        steps = [gates[n * B * G:(n + 1) * B * G] for n in range(T)]
        calls.append((gates, X, W_x, False, True, TB, G, I, 0.0))
        for n in range(T):
            calls.append((steps[n], v_prev, W_v, False, True, B, G, R, 1.0))
            if P:
                calls.append((q_n, v_n, W_qv, False, True, B, P, H, 0.0))
        if not train:
            continue
        dW_x, dW_v, dx, f_chi = buf(G * I), buf(G * R), buf(TB * I), buf(B * R)
        dW_qv, V_all, Y_all, dq, dv = buf(P * H), buf(TB * H), buf(TB * R), buf(B * R), buf(B * H)
        for n in range(T):
            if P:
                calls.append((dv, dq, W_qv, False, False, B, H, P, 0.0))
            calls.append((f_chi, steps[n], W_v, False, False, B, R, G, 0.0))
        calls.append((dW_x, gates, X, True, False, G, I, TB, 1.0))
        calls.append((dW_v, gates, Y_all, True, False, G, R, TB, 1.0))
        if P:
            calls.append((dW_qv, Y_all, V_all, True, False, P, H, TB, 1.0))
        calls.append((dx, gates, W_x, False, False, TB, I, G, 0.0))
    return calls


def work_floor(case: Case, threads: int, problem, timer) -> dict:
    from threadpoolctl import threadpool_limits
    from fusedrnn import _kernel
    gemm = _kernel.gemm
    plans = {m: floor_calls(case, m == "train") for m in MODES}

    def run(calls):
        def fn():
            for C, A, Bm, tA, tB, M, N, K, beta in calls:
                gemm(C, A, Bm, tA, tB, M, N, K, 1.0, beta)
        return fn

    with threadpool_limits(threads, "blas"):
        th = fr_threads(threads)
        timings = {m: timer(run(c)) for m, c in plans.items()}
        # the Python cost of one gemm() call (1x1x1), to judge the floor of tiny cases
        one = np.ones(1, np.dtype(case.dtype))
        t = timer(lambda: [gemm(one, one, one, False, False, 1, 1, 1, 1.0, 0.0) for _ in range(100)])
    import fusedrnn as fr
    over = t["median"] / 100
    for m, c in plans.items():  # net of the Python cost of the calls (kept as raw_median)
        timings[m]["raw_median"] = timings[m]["median"]
        timings[m]["median"] = max(timings[m]["median"] - len(c) * over, 0.5 * timings[m]["median"])
    return {"version": fr.__version__, "threads": th, "timings": timings,
            "gemm_calls": {m: len(c) for m, c in plans.items()},
            "python_call_overhead_s": over, **kernel_id()}


WORKERS = {"fusedrnn": work_fusedrnn, "torch": work_torch, "ort": work_ort,
           "oracle": work_oracle, "floor": work_floor}


def serve(competitor: str, threads: int) -> int:
    """Worker loop. The protocol goes through a private copy of fd 1; fd 1 itself is pointed at
    stderr so that nothing else (a library, a rebuild) can write into the protocol."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # import everything up front, so a job times only its calls
    import threadpoolctl  # noqa: F401
    import fusedrnn  # noqa: F401
    if competitor in ("torch", "frtorch"):
        import torch
        torch.set_num_threads(threads)
        if competitor == "frtorch":
            import fusedrnn.torch  # noqa: F401
    elif competitor in ("ort", "ort_int8"):
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    elif competitor in ("torch_bf16", "torch_int8"):
        import torch
        torch.set_num_threads(threads)
    elif competitor == "ov_bf16":
        try:
            import openvino  # noqa: F401
        except ImportError:
            pass  # the jobs report the skip
    proto.write(json.dumps({"ready": competitor, "pid": os.getpid(), "python": sys.executable,
                            "fusedrnn": os.path.dirname(fusedrnn.__file__),
                            "fusedrnn_version": fusedrnn.__version__}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        job = json.loads(line)
        try:
            with np.load(job["problem"]) as f:
                problem = {k: f[k] for k in f.files}

            def timer(fn):
                return measure(fn, job["budget"], job["min_rep"], job["max_rep"], job.get("warmup"))

            if job.get("section") == reduced.SECTION:
                work = reduced.work(competitor, problem, threads, timer)
            elif job.get("section") == streaming.SECTION:
                work = streaming.WORKERS[competitor](streaming.StreamCase(**job["case"]), problem,
                                                     {**job, "timer": timer})
            else:
                work = WORKERS[competitor](Case(**job["case"]), threads, problem, timer)
            result = {"ok": True, **work}
        except Exception:  # reported to the parent, which stops the run
            result = {"ok": False, "error": traceback.format_exc()}
        problem = None
        gc.collect()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_s"] = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
        proto.write(json.dumps(result) + "\n")
    return 0


# Environment a competitor's worker needs before its first import: fusedrnn float32 on AVX2
# (reduced.py) runs SciPy's OpenBLAS on its Haswell (AVX2) kernels, which OpenBLAS reads
# from OPENBLAS_CORETYPE when it loads.
COMPETITOR_ENV = {"fr_f32_avx2": {"OPENBLAS_CORETYPE": "Haswell"}}


class Worker:
    """A live worker process for one (competitor, threads). `python`: the interpreter to run
    it with (default: this one), e.g. another installation's venv/bin/python; the worker runs
    this benchmark's code with that installation's fusedrnn."""

    def __init__(self, competitor: str, threads: int, logdir: str, python: Optional[str] = None,
                 label: str = ""):
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        env.update(COMPETITOR_ENV.get(competitor, {}))
        self.competitor, self.threads = competitor, threads
        self.name = f"{competitor}/{threads}" + (f" ({label})" if label else "")
        self.log_path = os.path.join(logdir, f"{competitor}-{threads}{'-' + label if label else ''}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [python or sys.executable, RUN_PY, "--serve", competitor, "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
            env=env, cwd=REPO)
        self.ready = False
        self.info: dict = {}  # what the worker said when ready: its python, fusedrnn, version

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            with open(self.log_path) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"worker {self.name} died "
                               f"(exit {self.proc.poll()}):\n{tail}")
        return json.loads(line)

    def wait_ready(self) -> None:
        if not self.ready:
            self.info = self._read()
            self.ready = True

    def run(self, job: dict) -> dict:
        self.wait_ready()
        busy0, t0, me0 = cpu_busy_seconds(), time.perf_counter(), _own_cpu()
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        result = self._read()
        busy1, t1, me1 = cpu_busy_seconds(), time.perf_counter(), _own_cpu()
        if busy0 is not None and busy1 is not None and "cpu_s" in result:
            # the share of the machine used by other processes while the job ran
            other = max(0.0, (busy1 - busy0) - result["cpu_s"] - (me1 - me0))
            result["background_load"] = other / ((t1 - t0) * (os.cpu_count() or 1))
        if not result.pop("ok"):
            raise RuntimeError(f"worker {self.name} failed:\n{result['error']}")
        for pool, counts in result["threads"].items():
            if counts != [self.threads]:
                raise RuntimeError(f"worker {self.name} ran {pool} with {counts} threads, "
                                   f"not {self.threads}")
        return result

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
        self.log.close()
