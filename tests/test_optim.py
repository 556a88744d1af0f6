"""Optimisers against hand-computed updates and PyTorch, in-place updates of the
layers, state_dict round trips, and global-norm gradient clipping."""
import copy

import numpy as np
import pytest

import fusedrnn as fr


def pair(p, g):
    return ({"w": np.array(p, np.float64)}, {"w": np.array(g, np.float64)})


def test_sgd_plain_and_weight_decay():
    params, grads = pair([1.0, -2.0], [0.5, 0.25])
    fr.optim.SGD((params, grads), lr=0.1).step()
    np.testing.assert_allclose(params["w"], [1.0 - 0.05, -2.0 - 0.025])
    params, grads = pair([1.0, -2.0], [0.5, 0.25])
    fr.optim.SGD((params, grads), lr=0.1, weight_decay=0.1).step()
    # g + λp = [0.6, 0.05]
    np.testing.assert_allclose(params["w"], [1.0 - 0.06, -2.0 - 0.005])


def test_sgd_momentum_and_nesterov_by_hand():
    params, grads = pair([1.0], [1.0])
    opt = fr.optim.SGD((params, grads), lr=0.1, momentum=0.9)
    opt.step()                        # b = 1,            p = 1 - 0.1
    np.testing.assert_allclose(params["w"], [0.9])
    grads["w"][:] = 2.0
    opt.step()                        # b = 0.9 + 2 = 2.9, p = 0.9 - 0.29
    np.testing.assert_allclose(params["w"], [0.61])

    params, grads = pair([1.0], [1.0])
    opt = fr.optim.SGD((params, grads), lr=0.1, momentum=0.9, nesterov=True)
    opt.step()                        # b = 1, d = 1 + 0.9 = 1.9, p = 1 - 0.19
    np.testing.assert_allclose(params["w"], [0.81])
    grads["w"][:] = 2.0
    opt.step()                        # b = 2.9, d = 2 + 2.61 = 4.61, p = 0.81 - 0.461
    np.testing.assert_allclose(params["w"], [0.349])


def test_adam_by_hand():
    params, grads = pair([1.0, 2.0], [0.5, -4.0])
    opt = fr.optim.Adam((params, grads), lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    opt.step()  # m̂ = g, v̂ = g²: the first step moves every entry by lr (sign of g)
    np.testing.assert_allclose(params["w"], [1.0 - 0.1 * 0.5 / (0.5 + 1e-8),
                                             2.0 + 0.1 * 4.0 / (4.0 + 1e-8)], rtol=1e-12)
    p1 = params["w"].copy()
    grads["w"][:] = [1.0, 1.0]
    opt.step()
    g1, g2 = np.array([0.5, -4.0]), np.array([1.0, 1.0])
    m = 0.9 * (0.1 * g1) + 0.1 * g2
    v = 0.99 * (0.01 * g1 ** 2) + 0.01 * g2 ** 2
    m_hat, v_hat = m / (1 - 0.9 ** 2), v / (1 - 0.99 ** 2)
    np.testing.assert_allclose(params["w"], p1 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8),
                               rtol=1e-9)


@pytest.mark.parametrize("name,kw", [
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.5)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
])
def test_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((3, 4))
    gs = [rng.standard_normal((3, 4)) for _ in range(5)]
    params, grads = {"w": p0.copy()}, {"w": np.zeros_like(p0)}
    opt = getattr(fr.optim, name)((params, grads), **kw)
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = getattr(torch.optim, name)([tp], **kw)
    for g in gs:
        grads["w"][...] = g
        opt.step()
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(params["w"], tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_updates_layers_in_place_through_sequential():
    model = fr.Sequential(fr.LSTM(3, 4, seed=0), fr.Linear(4, 2, seed=1))
    before = {k: v.copy() for k, v in model.params.items()}
    ids = {k: id(v) for k, v in model[0].params.items()}
    opt = fr.optim.SGD(model, lr=0.1)
    y, _ = model.forward(np.ones((5, 2, 3)))
    model.backward(np.ones_like(y))
    opt.step()
    for k, v in model.params.items():
        assert not np.array_equal(v, before[k]), k
    assert {k: id(v) for k, v in model[0].params.items()} == ids  # same arrays, updated
    np.testing.assert_array_equal(model[0].params["W_x"], model.params["0.W_x"])


def test_list_of_models_and_pairs_keys():
    a, b = fr.Linear(2, 3, seed=0), fr.LSTM(3, 2, seed=1)
    opt = fr.optim.Adam([a, (b.params, b.grads)])
    assert [k for k, _, _ in opt.groups] == ["0.W", "0.b", "1.W_x", "1.W_v", "1.b", "1.w_s"]
    with pytest.raises(ValueError, match="twice"):
        fr.optim.SGD([a, a])  # would update the same array twice per step
    with pytest.raises(TypeError):
        fr.optim.SGD("not a model")
    with pytest.raises(ValueError, match="nesterov"):
        fr.optim.SGD(a, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        fr.optim.Adam(a, betas=(0.9, 1.0))


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9)),
                                     ("Adam", dict(lr=0.01))])
def test_state_dict_round_trip(name, kw):
    m1 = fr.Sequential(fr.RNN(2, 3, seed=0), fr.Linear(3, 1, seed=1))
    opt1 = getattr(fr.optim, name)(m1, **kw)

    def step(model, opt, g_seed):
        g = np.random.default_rng(g_seed)
        for v in model.grads.values():
            v[...] = g.standard_normal(v.shape)
        opt.step()

    for i in range(3):
        step(m1, opt1, i)
    m2 = copy.deepcopy(m1)
    opt2 = getattr(fr.optim, name)(m2, lr=123.0) if name == "Adam" else fr.optim.SGD(
        m2, lr=7.0, momentum=0.1)
    sd = opt1.state_dict()
    opt2.load_state_dict(sd)
    assert opt2.hyper == opt1.hyper and opt2.step_count == 3
    sd["state"][next(iter(sd["state"]))]["0.W_x"][...] = 99  # a copy: opt1 unaffected
    for i in range(3, 6):
        step(m1, opt1, i)
        step(m2, opt2, i)
    for k in m1.params:
        np.testing.assert_array_equal(m1.params[k], m2.params[k])
    with pytest.raises(ValueError, match="Adam|SGD"):
        (fr.optim.SGD(m2) if name == "Adam" else fr.optim.Adam(m2)).load_state_dict(sd)


def test_clip_grad_norm():
    g1 = {"a": np.array([3.0, 0.0])}
    g2 = {"b": np.array([[0.0, 4.0]], np.float32)}
    norm = fr.clip_grad_norm([g1, g2], max_norm=1.0)
    assert norm == pytest.approx(5.0)
    total = np.sqrt(np.sum(g1["a"] ** 2) + np.sum(g2["b"].astype(float) ** 2))
    assert total == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(g1["a"], [0.6, 0.0], rtol=1e-5)
    assert g2["b"].dtype == np.float32
    # below the threshold nothing changes; the norm is still returned
    assert fr.clip_grad_norm([g1, g2], max_norm=10.0) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(g1["a"], [0.6, 0.0], rtol=1e-5)
    layer = fr.Linear(2, 2, seed=0)
    layer.grads["W"][...] = 10.0
    assert fr.clip_grad_norm(layer, 2.0) == pytest.approx(20.0)
    assert np.sqrt(sum(np.sum(g ** 2) for g in layer.grads.values())) == pytest.approx(2.0, 1e-5)
    with pytest.raises(ValueError):
        fr.clip_grad_norm(layer, 0.0)


def test_lr_setter_and_zero_grad():
    layer = fr.Linear(2, 2, seed=0)
    opt = fr.optim.SGD(layer, lr=0.1)
    opt.lr = 0.01
    assert opt.lr == 0.01 and opt.state_dict()["hyper"]["lr"] == 0.01
    layer.grads["W"][...] = 1
    opt.zero_grad()
    assert not layer.grads["W"].any()
    with pytest.raises(ValueError):
        opt.lr = -1


@pytest.mark.parametrize("what", ["params", "grads"])
def test_step_refuses_a_replaced_array(what):
    """A params/grads entry replaced by a new array would be left untrained (or
    trained from a stale gradient) without a word: step() refuses instead."""
    model = fr.Sequential(fr.LSTM(2, 3, dtype=np.float64, seed=0), fr.Linear(3, 1, seed=1))
    opt = fr.optim.SGD(model, lr=0.1)
    opt.step()
    getattr(model[0], what)["W_x"] = getattr(model[0], what)["W_x"].copy()
    with pytest.raises(ValueError, match=r"'0.W_x' was replaced after the optimiser was created"):
        opt.step()
    fr.optim.SGD(model, lr=0.1).step()  # a new optimiser binds the new array


def test_step_refuses_added_or_removed_parameters():
    params, grads = pair([1.0], [1.0])
    opt = fr.optim.SGD((params, grads), lr=0.1)
    params["extra"], grads["extra"] = np.zeros(1), np.zeros(1)
    with pytest.raises(ValueError, match=r"\['extra'\] were added"):
        opt.step()
    del params["extra"], params["w"]
    with pytest.raises(ValueError, match="'w' was removed"):
        opt.step()


@pytest.mark.parametrize("change,exc,match", [
    (lambda sd: sd.update(step="3"), TypeError, r"state_dict\['step'\] must be an int"),
    (lambda sd: sd.update(step=True), TypeError, r"state_dict\['step'\] must be an int"),
    (lambda sd: sd.update(step=-1), ValueError, r"state_dict\['step'\] must be >= 0"),
    (lambda sd: sd.update(hyper=[1]), TypeError, r"state_dict\['hyper'\] must be a dict"),
    (lambda sd: sd["hyper"].update(lr=float("nan")), ValueError, "lr must be a finite"),
    (lambda sd: sd["hyper"].update(betas=(0.9,)), ValueError, "betas must be a pair"),
    (lambda sd: sd.pop("state"), ValueError, r"state_dict is missing \['state'\]"),
    (lambda sd: sd["state"]["m"].update(w=np.array(["a"])), TypeError, r"m\['w'\] must hold real"),
])
def test_load_state_dict_refuses_bad_entries_and_changes_nothing(change, exc, match):
    params, grads = pair([1.0], [0.5])
    opt = fr.optim.Adam((params, grads), lr=0.1)
    opt.step()
    sd = opt.state_dict()
    before = copy.deepcopy(opt.state_dict())
    change(sd)
    with pytest.raises(exc, match=match):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert after["hyper"] == before["hyper"] and after["step"] == before["step"]
    for name in before["state"]:
        np.testing.assert_array_equal(after["state"][name]["w"], before["state"][name]["w"])
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        opt.load_state_dict([("type", "Adam")])


def test_clip_grad_norm_refuses_read_only_grads():
    g = np.array([3.0, 4.0])
    g.flags.writeable = False
    with pytest.raises(ValueError, match="grads must be writeable"):
        fr.clip_grad_norm({"g": g}, 1.0)
    assert fr.clip_grad_norm({"g": g}, 10.0) == pytest.approx(5.0)  # nothing to scale: fine


def test_clip_grad_norm_counts_and_scales_a_shared_array_once():
    g = {"a": np.array([3.0, 4.0])}
    assert fr.clip_grad_norm([g, g], max_norm=1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(g["a"], np.array([3.0, 4.0]) / (5.0 + 1e-6))
