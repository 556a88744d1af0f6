"""Data-parallel training of a fusedrnn.torch model: DistributedDataParallel with
the gloo backend, 2 processes on loopback, gives the gradients (and after some
SGD steps the parameters) of one process training on the same global batch."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from fusedrnn import ddp_demo  # noqa: E402


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_single_process(tmp_path):
    steps, batch, world = 3, 8, 2
    out = tmp_path / "ddp.npz"
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   LOCAL_WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   GLOO_SOCKET_IFNAME="lo")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "fusedrnn.ddp_demo", "--steps", str(steps), "--batch",
             str(batch), "--out", str(out)],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=50)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log}"
    assert "world 2" in logs[0]
    ddp = dict(np.load(out))
    single = ddp_demo.train(steps, batch, rank=0, world=1)
    assert set(ddp) == set(single)
    grads = [k for k in single if k.startswith("grad/")]
    assert any("rnn.W_x_l1_reverse" in k for k in grads) and any("rnn.W_qv" in k for k in grads)
    for k in single:
        if k != "losses":
            np.testing.assert_allclose(ddp[k], single[k], rtol=1e-10, atol=1e-14, err_msg=k)
    assert not np.allclose(single["grad/inner.rnn.W_x"], 0)
