"""The examples run in --quick mode, their loss decreases and they write their
figure; the ψ[n] = ∂E/∂s[n] of the vanishing-gradient example is checked
against independent computations."""
import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import fusedrnn as fr  # noqa: E402
from fusedrnn import reference  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name):
    """Import examples/<name>.py as a module (its os.environ default is undone)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}",
                                                  os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved
    return module


@pytest.fixture(scope="module")
def vg():
    return load_example("vanishing_gradients")


def test_vanishing_gradients_quick(vg, tmp_path):
    res = vg.main(["--quick", "--out", str(tmp_path)])
    assert os.path.getsize(tmp_path / "vanishing_gradients.png") > 10_000
    d0 = res["delays"][0]
    for kind in vg.KINDS:
        losses = res["losses"][kind][d0]
        assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20]), kind
    d = res["delays"][-1]
    for kind in vg.KINDS:
        for stage in ("init", "trained"):
            norms = res["psi"][kind][stage]
            assert norms.shape == (d + 1,) and np.all(np.isfinite(norms)) and norms[-1] > 0
    # the canonical RNN's gradient decays much faster going back in time
    rnn, lstm = res["psi"]["RNN"]["init"], res["psi"]["LSTM"]["init"]
    assert rnn[0] / rnn[-1] < 1e-3 * (lstm[0] / lstm[-1])


def test_psi_of_the_rnn_equals_an_input_gradient(vg):
    """With W_x augmented by an identity block and zero extra inputs, s[n] is
    unchanged and ∂E/∂x_extra[n] = ψ[n] exactly (the kernel's backward)."""
    rng = np.random.default_rng(0)
    model = vg.build("RNN", 6, seed=3)
    x, target = vg.make_batch(rng, 9, 4)
    psi = vg.psi(model, x, target)
    H = 6
    aug = fr.RNN(2 + H, H, dtype=np.float64)
    aug.params["W_x"][...] = np.hstack([model[0].params["W_x"], np.eye(H)])
    aug.params["W_r"][...] = model[0].params["W_r"]
    aug.params["theta_s"][...] = model[0].params["theta_s"]
    head = fr.Linear(H, 1, dtype=np.float64)
    head.params["W"][...] = model[1].params["W"]
    head.params["b"][...] = model[1].params["b"]
    net = fr.Sequential(aug, head)
    xa = np.concatenate([x, np.zeros(x.shape[:2] + (H,))], axis=2)
    y, _ = net.forward(xa)
    dx, _ = net.backward(vg.last_step_loss(y, target)[1])
    np.testing.assert_allclose(psi, dx[:, :, 2:], rtol=1e-4, atol=1e-12)


def test_psi_of_the_lstm_against_finite_differences(vg):
    """ψ[n] = total ∂E/∂s[n]: perturb s[n] (which also changes v[n] through the
    readout gate and tanh), run the rest with the oracle, difference E."""
    rng = np.random.default_rng(1)
    model = vg.build("LSTM", 5, seed=2)
    x, target = vg.make_batch(rng, 7, 3)
    psi = vg.psi(model, x, target)
    p = {k: v.astype(np.float64) for k, v in model[0].params.items()}
    P = reference.split_lstm_params(p)
    W, b = model[1].params["W"].astype(np.float64), model[1].params["b"].astype(np.float64)
    x64 = x.astype(np.float64)
    _, _, _, cache = reference.lstm_forward(x64, p, None, None)
    T = x.shape[0]

    def energy(n, s_n):
        v_prev = cache["v"][n]
        a_cr = x64[n] @ P["W_xcr"].T + v_prev @ P["W_vcr"].T + P["b_cr"] + P["w_scr"] * s_n
        v_n = 0.5 * (1 + np.tanh(0.5 * a_cr)) * np.tanh(s_n)
        if n < T - 1:
            v_seq, _, _, _ = reference.lstm_forward(x64[n + 1:], p, s_n, v_n)
            v_n = v_seq[-1]
        return fr.mse_loss(v_n @ W.T + b, target.astype(np.float64))[0]

    eps = 1e-6
    for n in (0, 3, T - 2, T - 1):
        for bj in ((0, 1), (2, 4)):
            s_p, s_m = cache["s"][n + 1].copy(), cache["s"][n + 1].copy()
            s_p[bj] += eps
            s_m[bj] -= eps
            fd = (energy(n, s_p) - energy(n, s_m)) / (2 * eps)
            assert psi[n][bj] == pytest.approx(fd, rel=1e-5, abs=1e-10), (n, bj)


def test_char_lm_quick(tmp_path):
    cl = load_example("char_lm")
    ck = tmp_path / "lm.npz"
    res = cl.main(["--quick", "--out", str(tmp_path), "--checkpoint", str(ck), "--no-progress"])
    loss = res["history"].loss
    assert np.mean(loss[-5:]) < np.mean(loss[:5]) - 0.3
    assert os.path.getsize(tmp_path / "char_lm.png") > 10_000
    for s in res["samples"]:
        assert len(s) > 200 and set(s) <= set(res["vocab"].chars)
    meta = fr.load_checkpoint(ck).metadata
    assert meta["vocabulary"] == res["vocab"].chars
    # the trained model in reduced precision: validation bits per character within 0.5% (bf16)
    # and 2% (int8) of float32's, and really computed in reduced precision (not equal)
    bpc = res["bpc"]
    assert bpc["float32"] == pytest.approx(res["val"][-1] / np.log(2), rel=1e-6)
    for precision, bound in (("bf16", 0.005), ("int8", 0.02)):
        assert bpc[precision] != bpc["float32"], precision
        assert abs(bpc[precision] / bpc["float32"] - 1) <= bound, (precision, bpc)
    table = (tmp_path / "char_lm_precision.md").read_text(encoding="utf-8")
    for precision in ("float32", "bf16", "int8"):
        assert f"| {precision} | {bpc[precision]:.4f} |" in table


def test_timeseries_lookahead_quick(tmp_path):
    ts = load_example("timeseries_lookahead")
    threads = fr.get_num_threads()
    res = ts.main(["--quick", "--out", str(tmp_path), "--no-progress"])
    assert fr.get_num_threads() == threads          # the example restores the setting
    for kind in ts.KINDS:
        loss = res["history"][kind].loss
        assert np.all(np.isfinite(loss)), kind
        assert np.mean(loss[-5:]) < 0.5 * np.mean(loss[:5]), kind
        assert res["rmse"][kind] < res["rmse"]["noisy"], kind
    assert os.path.getsize(tmp_path / "timeseries_lookahead.png") > 10_000
    table = (tmp_path / "timeseries_lookahead.md").read_text(encoding="utf-8")
    for label in ts.LABELS.values():
        assert label in table
    # both trained models in reduced precision: held-out RMSE within 1% (bf16) and 3% (int8)
    # of float32's, and really computed in reduced precision (not equal)
    for kind in ts.KINDS:
        r = res["precision"][kind]
        assert r["float32"] == res["rmse"][kind], kind
        for precision, bound in (("bf16", 0.01), ("int8", 0.03)):
            assert r[precision] != r["float32"], (kind, precision)
            assert abs(r[precision] / r["float32"] - 1) <= bound, (kind, precision, r)
        assert f"| {ts.LABELS[kind]} | {r['float32']:.4f} | {r['bf16']:.4f} |" in table


def _tree_state(folder):
    """(name, size, mtime_ns) of every file under folder, and git's view of it."""
    files = sorted((os.path.relpath(os.path.join(d, f), folder),
                    os.path.getsize(os.path.join(d, f)), os.stat(os.path.join(d, f)).st_mtime_ns)
                   for d, _, names in os.walk(folder) for f in names)
    return files


def _git_status(path):
    import shutil
    import subprocess
    if shutil.which("git") is None:
        return None
    out = subprocess.run(["git", "status", "--porcelain", "--", path], cwd=EXAMPLES,
                         capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None     # None outside a git checkout


# every example, with options that make its --quick run tinier still
QUICK = {
    "vanishing_gradients": ["--delays", "3", "--steps", "5"],
    "char_lm": ["--epochs", "1", "--hidden", "8", "--no-progress"],
    "timeseries_lookahead": ["--epochs", "1", "--length", "600", "--no-progress"],
    "streaming": ["--frames", "40", "--no-torch"],
}


def test_every_example_is_checked_for_its_outputs():
    scripts = {f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py") and not f.startswith("_")}
    assert scripts == set(QUICK)


@pytest.mark.parametrize("name, extra", list(QUICK.items()))
def test_quick_runs_leave_the_committed_figures_alone(name, extra):
    """Without --out, a --quick run writes to a new temporary directory, never to
    examples/figures (whose files and git status stay as they were)."""
    figures = os.path.join(EXAMPLES, "figures")
    before, status = _tree_state(figures), _git_status(figures)
    res = load_example(name).main(["--quick", *extra])
    figure = res["figure"]
    try:
        assert os.path.getsize(figure) > 10_000
        assert os.path.commonpath([os.path.abspath(figure), figures]) != figures, figure
        assert _tree_state(figures) == before
        assert _git_status(figures) == status
    finally:
        import shutil
        shutil.rmtree(os.path.dirname(figure), ignore_errors=True)
