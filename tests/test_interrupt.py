"""Ctrl-C stops a long kernel call: a SIGINT sent during a long forward or
backward raises KeyboardInterrupt within 0.5 s (the kernel asks Python's
signal handlers about every 50 ms), the gradients are as they were before the
interrupted backward, and the layer computes as before afterwards.

Runs in a subprocess (the signal goes to that process only), with a timeout."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(r'''
    import os, signal, threading, time
    import numpy as np
    import fusedrnn as fr

    def interrupted_after(call, delay):
        """Run call(), SIGINT to this process `delay` s after it starts; the
        seconds from the signal to the KeyboardInterrupt."""
        sent = []
        def fire():
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)
        timer = threading.Timer(delay, fire)
        timer.start()
        try:
            call()
        except KeyboardInterrupt:
            caught = time.monotonic()
        else:
            raise AssertionError("the call ended before the signal: make it longer")
        finally:
            timer.cancel()
        return caught - sent[0]

    fr.set_num_threads(1)  # one core: the timing does not hang on a loaded host's scheduler
    rng = np.random.default_rng(0)
    I, H, B = 32, 512, 16
    layer = fr.LSTM(I, H, seed=0)
    x_small = rng.standard_normal((5, 3, I)).astype(np.float32)

    def small_results(l):
        l.zero_grad()
        y, _ = l.forward(x_small)
        dx, _ = l.backward(np.ones_like(y))
        return [np.array(y), dx] + [g.copy() for g in l.grads.values()]

    want = small_results(layer)

    # a long inference forward (4000 steps of 33 Mflop: seconds)
    x_long = rng.standard_normal((4000, B, I)).astype(np.float32)
    lag = interrupted_after(lambda: layer.forward(x_long, training=False), 0.5)
    print("forward lag", lag)
    assert lag < 0.5, f"forward: KeyboardInterrupt {lag:.3f} s after the signal"

    # a long backward: the gradients stay as they were
    x_train = rng.standard_normal((1000, B, I)).astype(np.float32)
    y, _ = layer.forward(x_train)
    dy = np.ones_like(y)
    for g in layer.grads.values():
        g[...] = 0.25
    lag = interrupted_after(lambda: layer.backward(dy), 0.5)
    print("backward lag", lag)
    assert lag < 0.5, f"backward: KeyboardInterrupt {lag:.3f} s after the signal"
    for k, g in layer.grads.items():
        assert np.all(g == 0.25), f"grads[{k!r}] changed by the interrupted backward"

    got = small_results(layer)  # the layer works as before
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    print("ok")
''')


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_long_forward_and_backward():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok"), proc.stdout
