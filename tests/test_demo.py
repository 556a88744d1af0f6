"""`python -m fusedrnn.demo`: trains with fr.optim, reports the kernel path that runs."""
import subprocess
import sys

import numpy as np

import fusedrnn as fr
from fusedrnn import _kernel, demo


def test_demo_runs_and_reports_the_kernel_path():
    out = subprocess.run([sys.executable, "-m", "fusedrnn.demo", "--steps", "3", "--threads", "2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[1]
    assert "packed micro-kernel" in header and "2 threads" in header, header
    assert f"{demo.ISA_NAMES[_kernel.best_isa()]} tiles" in header, header
    assert "done: 3 steps" in out.stdout


def test_kernel_summary_follows_the_isa_and_threads_in_use():
    threads = fr.get_num_threads()
    old = _kernel.set_isa(0)
    try:
        fr.set_num_threads(1)
        assert demo.kernel_summary().startswith("packed micro-kernel, baseline C tiles, 1 thread ")
        if _kernel.best_isa() >= 1:
            _kernel.set_isa(1)
            fr.set_num_threads(3)
            assert demo.kernel_summary().startswith("packed micro-kernel, AVX2+FMA tiles, 3 threads")
    finally:
        _kernel.set_isa(old)
        fr.set_num_threads(threads)
    assert _kernel.get_isa() == old


def test_demo_trains_with_fr_optim_and_the_loss_falls():
    """The demo's run equals the plain loop with fr.optim.Adam and fr.mse_loss, bit for bit."""
    threads = fr.get_num_threads()
    res = demo.main(["--steps", "250", "--seed", "3"])
    assert fr.get_num_threads() == threads             # the setting is restored
    fr.set_num_threads(1)
    try:
        rng = np.random.default_rng(3)
        model = fr.Sequential(fr.LSTM(1, 64, peepholes=True, seed=3), fr.Linear(64, 1, seed=4))
        opt = fr.optim.Adam(model, lr=1e-2)
        losses = []
        for _ in range(250):
            x = rng.uniform(-1, 1, (40, 32, 1)).astype(np.float32)
            target = np.zeros_like(x)
            target[8:] = x[:-8]
            mask = np.zeros((40, 32), bool)
            mask[8:] = True
            y, _ = model.forward(x)
            loss, dy = fr.mse_loss(y, target, mask=mask)
            losses.append(loss)
            model.zero_grad()
            model.backward(dy)
            opt.step()
    finally:
        fr.set_num_threads(threads)
    np.testing.assert_array_equal(res["losses"], losses)
    assert np.mean(res["losses"][-10:]) < 0.2 * np.mean(res["losses"][:10])
