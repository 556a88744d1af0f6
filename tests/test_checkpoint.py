"""Checkpoints: save -> load round-trips exactly (configuration, parameters,
optimiser state, metadata) and a wrong, truncated, corrupted or foreign file
raises ValueError; nothing is ever unpickled."""
import hashlib
import json
import zipfile

import numpy as np
import pytest

import fusedrnn as fr
from fusedrnn.checkpoint import FORMAT_VERSION, HEADER


def trained_model(dtype=np.float64):
    model = fr.Sequential(
        fr.LSTM(3, 5, peepholes=True, dtype=dtype, seed=0),
        fr.LSTM(5, 4, peepholes=False, dtype=dtype, seed=1),
        fr.RNN(4, 4, state_feedback=True, dtype=dtype, seed=2),
        fr.Linear(4, 2, bias=False, dtype=dtype, seed=3),
    )
    opt = fr.optim.Adam(model, lr=0.01, betas=(0.8, 0.9), weight_decay=1e-3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 2, 3))
    t = rng.standard_normal((30, 2, 2))
    fr.train.tbptt(model, x, t, fr.mse_loss, window=10, optimizer=opt, progress=False)
    return model, opt, x, t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path, dtype):
    model, opt, x, t = trained_model(dtype)
    path = tmp_path / "m.npz"
    fr.save(path, model, opt, metadata={"vocab": ["a", "b"], "note": "ünïcode"})
    ck = fr.load_checkpoint(path)
    m2, opt2 = ck.model, ck.optimizer
    assert ck.metadata == {"vocab": ["a", "b"], "note": "ünïcode"}
    assert repr(m2) == repr(model)
    assert list(m2.params) == list(model.params)
    for k, p in model.params.items():
        assert m2.params[k].dtype == p.dtype
        np.testing.assert_array_equal(m2.params[k], p)
    assert isinstance(opt2, fr.optim.Adam) and opt2.hyper == opt.hyper
    assert opt2.step_count == opt.step_count
    for name in opt.state:
        for k in opt.state[name]:
            np.testing.assert_array_equal(opt2.state[name][k], opt.state[name][k])
    # the reloaded pair continues training exactly like the original
    for m, o in ((model, opt), (m2, opt2)):
        fr.train.tbptt(m, x, t, fr.mse_loss, window=10, optimizer=o, progress=False)
    for k in model.params:
        np.testing.assert_array_equal(m2.params[k], model.params[k])
    y, _ = model.forward(x, training=False)
    np.testing.assert_array_equal(fr.load(path).forward(x, training=False)[0].shape, y.shape)


def test_single_layers_and_sgd(tmp_path):
    for layer in (fr.LSTM(2, 3, seed=5, batch_first=True), fr.RNN(2, 3, seed=6),
                  fr.Linear(4, 2, seed=7, dtype=np.float64)):
        path = tmp_path / f"{type(layer).__name__}.npz"
        opt = fr.optim.SGD(layer, lr=0.1, momentum=0.9, nesterov=True)
        for g in layer.grads.values():
            g[...] = 1.0
        opt.step()
        fr.save(str(path), layer, opt)
        ck = fr.load_checkpoint(path)
        assert type(ck.model) is type(layer) and repr(ck.model) == repr(layer)
        for k in layer.params:
            np.testing.assert_array_equal(ck.model.params[k], layer.params[k])
        assert ck.optimizer.hyper == opt.hyper
        np.testing.assert_array_equal(ck.optimizer.state["momentum_buffer"][next(iter(layer.params))],
                                      opt.state["momentum_buffer"][next(iter(layer.params))])
    m = fr.load(tmp_path / "Linear.npz")
    assert fr.load_checkpoint(tmp_path / "Linear.npz").metadata == {}
    assert m.params["W"].dtype == np.float64


def test_file_is_a_plain_npz_without_pickles(tmp_path):
    model, opt, _, _ = trained_model()
    path = tmp_path / "m.npz"
    fr.save(path, model, opt)
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(z[HEADER].tobytes().decode())
        for name in z.files:
            assert z[name].dtype != object
    assert header["format"] == "fusedrnn-checkpoint" and header["format_version"] == FORMAT_VERSION
    assert header["model"]["type"] == "Sequential"
    layer0 = header["model"]["layers"][0]
    assert layer0["type"] == "LSTM"
    expected = {"input_size": 3, "hidden_size": 5, "dtype": "float64", "batch_first": False}
    assert {k: layer0["config"][k] for k in expected} == expected
    assert header["model"]["layers"][3]["config"] == {"in_features": 4, "out_features": 2,
                                                     "bias": False, "dtype": "float64"}
    assert not list(tmp_path.glob(".fusedrnn-*"))   # no temporary file left


def rewrite(src, dst, edit, sign=True):
    """Copy the npz at src to dst with edit(name, bytes) -> bytes or None (drop);
    sign=True writes a valid file checksum (to reach the checks behind it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        zout.comment = b"0" * 64
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
    if sign:
        data = bytearray(dst.read_bytes())
        data[-64:] = hashlib.sha256(bytes(data[:-64])).hexdigest().encode()
        dst.write_bytes(bytes(data))


@pytest.fixture
def saved(tmp_path):
    model, opt, _, _ = trained_model()
    path = tmp_path / "good.npz"
    fr.save(path, model, opt)
    return path


def test_rejects_truncated(saved, tmp_path):
    data = saved.read_bytes()
    for n in (len(data) // 2, len(data) - 10, 10):
        bad = tmp_path / f"cut{n}.npz"
        bad.write_bytes(data[:n])
        with pytest.raises(ValueError, match="not a valid fusedrnn checkpoint"):
            fr.load(bad)


def test_rejects_corrupted_bytes(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    for pos in list(range(0, len(data), max(1, len(data) // 97))) + [len(data) - 1]:
        bad = tmp_path / f"flip{pos}.npz"
        d = bytearray(data)
        d[pos] ^= 0xFF
        bad.write_bytes(bytes(d))
        with pytest.raises(ValueError, match="not a valid fusedrnn checkpoint"):
            fr.load(bad)


def test_rejects_tampered_members(saved, tmp_path):
    # a parameter changed and re-zipped with a valid CRC: the checksum catches it
    def change_param(name, data):
        if name == "param/0.W_x.npy":
            arr = bytearray(data)
            arr[-1] ^= 0x01
            return bytes(arr)
        return data
    bad = tmp_path / "tampered.npz"
    rewrite(saved, bad, change_param, sign=False)
    with pytest.raises(ValueError, match="file checksum"):
        fr.load(bad)
    rewrite(saved, bad, change_param)
    with pytest.raises(ValueError, match="'param/0.W_x' is corrupted"):
        fr.load(bad)
    rewrite(saved, bad, lambda n, d: d)          # an unchanged re-zip with a valid checksum loads
    assert list(fr.load(bad).params) == list(fr.load(saved).params)
    # a member missing
    rewrite(saved, bad, lambda n, d: None if n == "param/1.W_v.npy" else d)
    with pytest.raises(ValueError, match="members"):
        fr.load(bad)

    # a newer format version, and a wrong format name
    def header_edit(field, value):
        def edit(name, data):
            if name == HEADER + ".npy":
                import io
                h = json.loads(np.load(io.BytesIO(data)).tobytes().decode())
                h[field] = value
                buf = io.BytesIO()
                np.save(buf, np.frombuffer(json.dumps(h).encode(), np.uint8))
                return buf.getvalue()
            return data
        return edit
    rewrite(saved, bad, header_edit("format_version", FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match="newer"):
        fr.load(bad)
    rewrite(saved, bad, header_edit("format", "something-else"))
    with pytest.raises(ValueError, match="header"):
        fr.load(bad)
    rewrite(saved, bad, header_edit("model", {"type": "Transformer", "config": {}}))
    with pytest.raises(ValueError, match="unknown layer type"):
        fr.load(bad)


def test_rejects_foreign_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a checkpoint\n")
    npy = tmp_path / "array.npy"
    np.save(npy, np.arange(5))
    npz = tmp_path / "other.npz"
    np.savez(npz, a=np.arange(3), b=np.ones(2))
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, **{HEADER: np.array([{"evil": 1}], dtype=object)})
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    for bad in (text, npy, npz, pickled, empty):
        with pytest.raises(ValueError, match="not a valid fusedrnn checkpoint"):
            fr.load(bad)
    with pytest.raises(FileNotFoundError):
        fr.load(tmp_path / "missing.npz")


def test_save_refuses_unrelated_optimizer(tmp_path):
    a, b = fr.Linear(2, 2, seed=0), fr.Linear(2, 2, seed=1)
    with pytest.raises(ValueError, match="not a parameter"):
        fr.save(tmp_path / "x.npz", a, fr.optim.SGD(b))
    model = fr.Sequential(a, b)
    with pytest.raises(ValueError, match="does not cover"):
        fr.save(tmp_path / "x.npz", model, fr.optim.SGD(a))
    # an optimiser built on the layers (not the Sequential) is mapped to the model's keys
    opt = fr.optim.Adam([a, b])
    fr.save(tmp_path / "x.npz", model, opt)
    assert set(fr.load_checkpoint(tmp_path / "x.npz").optimizer.state["m"]) == set(model.params)
    with pytest.raises(TypeError, match="registered"):
        fr.save(tmp_path / "y.npz", object.__new__(type("Foo", (), {"params": {}})))


def test_augmented_lstm_round_trip_with_dropout_stream(tmp_path):
    """Every LSTM option is part of the configuration; the dropout generator's state
    is saved too, so training resumes exactly."""
    def make():
        return fr.Sequential(
            fr.LSTM(2, 4, peepholes=None, context=(2, 0), dtype=np.float64, seed=3),
            fr.LSTM(4, 5, peepholes="full", proj_size=3, num_layers=2, bidirectional=True,
                    dropout=0.3, coupled_gates=True, cell_clip=2.0, accumulation_clip=8.0,
                    dtype=np.float64, seed=0),
            fr.RNN(6, 3, num_layers=2, dtype=np.float64, seed=1),
            fr.Linear(3, 1, dtype=np.float64, seed=2))
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((12, 2, 2)), rng.standard_normal((12, 2, 1))
    model = make()
    opt = fr.optim.SGD(model, lr=0.05, momentum=0.9)
    fr.train.tbptt(model, x, t, fr.mse_loss, window=4, optimizer=opt, progress=False)
    fr.save(tmp_path / "aug.npz", model, opt)
    m2, opt2, _ = fr.load_checkpoint(tmp_path / "aug.npz")
    assert repr(m2) == repr(model)
    for m, o in ((model, opt), (m2, opt2)):
        fr.train.tbptt(m, x, t, fr.mse_loss, window=4, optimizer=o, progress=False)
    for k in model.params:
        np.testing.assert_array_equal(m2.params[k], model.params[k])


def _signed_edit(src, dst, header_edit=None, member_edit=None, compression=zipfile.ZIP_STORED):
    """Copy src to dst with the JSON header changed by header_edit(dict), members by
    member_edit(name, bytes) -> bytes, and a valid file checksum."""
    import io

    def edit(name, data):
        if name == HEADER + ".npy" and header_edit is not None:
            h = json.loads(np.load(io.BytesIO(data)).tobytes().decode())
            header_edit(h)
            buf = io.BytesIO()
            np.save(buf, np.frombuffer(json.dumps(h).encode(), np.uint8))
            return buf.getvalue()
        return member_edit(name, data) if member_edit is not None else data
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        zout.comment = b"0" * 64
        for info in zin.infolist():
            zout.writestr(info.filename, edit(info.filename, zin.read(info.filename)))
    data = bytearray(dst.read_bytes())
    data[-64:] = hashlib.sha256(bytes(data[:-64])).hexdigest().encode()
    dst.write_bytes(bytes(data))


def _peak_bytes(call):
    """Peak of the memory traced while call() runs (numpy reports its buffers)."""
    import tracemalloc
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _raises_value_error(path, match):
    def call():
        with pytest.raises(ValueError, match=match):
            fr.load_checkpoint(path)
    return call


@pytest.mark.parametrize("hidden", [1000, 10**6])
def test_huge_configuration_claims_allocate_nothing(tmp_path, hidden):
    """A configuration that claims a much larger layer than the stored parameters is
    refused before the layer is built: no allocation of its parameters (the first
    size would take ~64 MB, the second cannot be allocated at all)."""
    src, bad = tmp_path / "good.npz", tmp_path / "huge.npz"
    fr.save(src, fr.LSTM(3, 4, dtype=np.float64, seed=0))
    _signed_edit(src, bad, header_edit=lambda h: h["model"]["config"].update(hidden_size=hidden))
    peak = _peak_bytes(_raises_value_error(bad, "the model built from the configuration expects"))
    assert peak < 8 * 2**20, peak


@pytest.mark.parametrize("claim", [50_000_000, 10**15])
def test_member_shape_claims_beyond_the_file_allocate_nothing(tmp_path, claim):
    """A member whose .npy header (and the checkpoint header) claims more elements than
    its bytes hold is refused before anything of that size is allocated."""
    import io
    src, bad = tmp_path / "good.npz", tmp_path / "claim.npz"
    fr.save(src, fr.LSTM(3, 4, dtype=np.float64, seed=0))

    def member(name, data):
        if name != "param/b.npy":
            return data
        f = io.BytesIO(data)
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        out = io.BytesIO()
        np.lib.format.write_array_header_1_0(out, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (claim,)})
        return out.getvalue() + data[f.tell():]

    _signed_edit(src, bad, header_edit=lambda h: h["arrays"]["param/b"].update(shape=[claim]),
                 member_edit=member)
    peak = _peak_bytes(_raises_value_error(bad, rf"'param/b' claims shape \[{claim}\]"))
    assert peak < 8 * 2**20, peak


def test_compressed_members_are_refused(tmp_path):
    """save stores members uncompressed; a deflated member (which could inflate far
    beyond the file's size) is refused."""
    src, bad = tmp_path / "good.npz", tmp_path / "deflated.npz"
    fr.save(src, fr.LSTM(3, 4, seed=0))
    _signed_edit(src, bad, compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match="is compressed"):
        fr.load(bad)
    _signed_edit(src, bad)                # the same re-zip, stored: loads
    np.testing.assert_array_equal(fr.load(bad).params["W_x"], fr.load(src).params["W_x"])


def test_every_truncation_is_a_value_error(saved, tmp_path):
    data = saved.read_bytes()
    bad = tmp_path / "cut.npz"
    for n in range(0, len(data), max(1, len(data) // 400)):
        bad.write_bytes(data[:n])
        with pytest.raises(ValueError, match="not a valid fusedrnn checkpoint"):
            fr.load(bad)


@pytest.mark.parametrize("reader", ["checkpoint", "onnx"])
def test_readers_refuse_pipes_and_devices_without_blocking(tmp_path, reader):
    """A named pipe would block the read forever and /dev/zero never ends."""
    import os
    if reader == "onnx":
        pytest.importorskip("onnx")
    load = fr.load if reader == "checkpoint" else fr.onnx.load
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        with pytest.raises(ValueError, match="not a regular file"):
            load(path)


def test_registering_a_layer_first_keeps_the_builtin_layers(tmp_path, monkeypatch):
    """A custom layer registered before any save/load left LSTM, RNN and Linear
    unknown ("not a registered layer type")."""
    from fusedrnn import checkpoint
    monkeypatch.setattr(checkpoint, "_LAYERS", {})          # a fresh process's registry

    class Scale:
        def __init__(self, n):
            self.n = n
            self.params = {"w": np.ones(n)}
            self.grads = {"w": np.zeros(n)}

        def forward(self, x, training=True):
            return x * self.params["w"]

        def backward(self, dy):
            return dy * self.params["w"]
    checkpoint.register_layer(Scale)
    model = fr.Sequential(fr.LSTM(2, 3, seed=0), Scale(3))
    fr.save(tmp_path / "m.npz", model)
    back = fr.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back[0].params["W_x"], model[0].params["W_x"])
    assert type(back[1]) is Scale and back[1].n == 3
    with pytest.raises(TypeError, match="cls must be a layer class"):
        checkpoint.register_layer("LSTM")
    with pytest.raises(ValueError, match=r"the model configuration\['config'\] must be a dict"):
        checkpoint.model_from_config({"type": "LSTM", "config": [2, 3]})
