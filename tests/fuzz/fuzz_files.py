"""Fuzz target over the file readers: fr.load_checkpoint and fr.onnx.load.

Each input (a byte string) picks a valid seed file (a checkpoint of a
Sequential with its Adam state, or an exported ONNX stack) and mutates it:
raw byte edits, truncation or insertion (with the checkpoint's file checksum
written again, or not, so both the checksum and the checks behind it are
reached), or a structured edit (a value anywhere in the checkpoint's JSON
header replaced; an ONNX attribute, tensor dims/data or node input changed).

The only acceptable outcomes: ValueError, or a model that then runs a forward
pass. Anything else (another exception, a crash, a huge allocation caught by
the address-space cap) is a finding.

    python tests/fuzz/fuzz_files.py -max_total_time=60        # atheris if installed
tests/test_fuzz_files.py drives `one_input` with hypothesis in the normal suite.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
import warnings
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_api  # noqa: E402  (the byte decoder and the runner)
from fuzz_api import Data  # noqa: E402

import fusedrnn as fr  # noqa: E402

_DIR = tempfile.mkdtemp(prefix="fusedrnn-fuzz-files-")
_SEEDS: dict = {}
POOL = [None, True, False, 0, 1, -1, 3, 2**31, 2**62, 10**30, 1.5, float("nan"), "", "x",
        "float64", "LSTM", "Sequential", [], [1], [0, 0], [-1], {}, {"a": 1}, {"type": "LSTM"}]


def _seeds() -> dict:
    if not _SEEDS:
        model = fr.Sequential(fr.LSTM(3, 4, peepholes="diagonal", num_layers=2, dtype=np.float64,
                                      seed=0), fr.Linear(4, 2, dtype=np.float64, seed=1))
        opt = fr.optim.Adam(model, lr=0.01)
        for g in model.grads.values():
            g[...] = 0.1
        opt.step()
        path = os.path.join(_DIR, "seed.npz")
        fr.save(path, model, opt, metadata={"note": "seed"})
        with open(path, "rb") as f:
            _SEEDS["npz"] = f.read()
        lstm = fr.LSTM(3, 4, peepholes="diagonal", coupled_gates=True, accumulation_clip=2.0,
                       num_layers=2, bidirectional=True, seed=0)
        _SEEDS["onnx"] = fr.onnx.to_model(lstm, sequence_lens=True,
                                          initial_state=True).SerializeToString()
    return _SEEDS


def _sign(data: bytes) -> bytes:
    out = bytearray(data)
    if len(out) >= 64:
        out[-64:] = hashlib.sha256(bytes(out[:-64])).hexdigest().encode()
    return bytes(out)


def _byte_edits(d: Data, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(1 + d.u8() % 4):
        how = d.u8() % 4
        pos = d.u32() % max(1, len(out))
        if how == 0 and out:
            out[pos] = d.u8()
        elif how == 1:
            del out[pos:]
        elif how == 2:
            out[pos:pos] = bytes(d.u8() for _ in range(1 + d.u8() % 8))
        elif out:
            out[pos] ^= 1 << (d.u8() % 8)
    return bytes(out)


def _replace_somewhere(d: Data, node, depth: int = 0):
    """node with one value (at a path the bytes choose) replaced from POOL."""
    if isinstance(node, dict) and node and depth < 8 and not d.chance(5):
        key = sorted(node)[d.u8() % len(node)]
        node = dict(node)
        node[key] = _replace_somewhere(d, node[key], depth + 1)
        return node
    if isinstance(node, list) and node and depth < 8 and not d.chance(5):
        i = d.u8() % len(node)
        node = list(node)
        node[i] = _replace_somewhere(d, node[i], depth + 1)
        return node
    return d.pick(POOL)


def _header_edit(d: Data, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(buf, "w") as zout:
        zout.comment = b"0" * 64
        for info in zin.infolist():
            raw = zin.read(info.filename)
            if info.filename == "__fusedrnn__.npy":
                header = json.loads(np.load(io.BytesIO(raw)).tobytes())
                for _ in range(1 + d.u8() % 3):
                    header = _replace_somewhere(d, header)
                out = io.BytesIO()
                np.save(out, np.frombuffer(json.dumps(header).encode(), np.uint8))
                raw = out.getvalue()
            zout.writestr(info.filename, raw)
    return _sign(buf.getvalue())


def _onnx_edit(d: Data, data: bytes) -> bytes:
    import onnx
    m = onnx.ModelProto()
    m.ParseFromString(data)
    for _ in range(1 + d.u8() % 3):
        what = d.u8() % 5
        nodes = [n for n in m.graph.node if n.op_type == "LSTM"] if d.chance(2) else list(m.graph.node)
        node = nodes[d.u8() % len(nodes)]
        if what == 0 and node.attribute:  # an attribute's value
            a = node.attribute[d.u8() % len(node.attribute)]
            v = d.pick([0, 1, 2, -1, 5, 2**40])
            if a.type == onnx.AttributeProto.INT:
                a.i = v
            elif a.type == onnx.AttributeProto.FLOAT:
                a.f = d.pick([0.0, -1.0, float("nan"), float("inf"), 1e30])
            elif a.type == onnx.AttributeProto.STRING:
                a.s = d.pick([b"reverse", b"bidirectional", b"forward", b"", b"\xff"])
            elif a.type == onnx.AttributeProto.STRINGS and a.strings:
                a.strings[d.u8() % len(a.strings)] = d.pick([b"Relu", b"tanh", b""])
        elif what == 1 and node.input:  # a node input renamed or cleared
            node.input[d.u8() % len(node.input)] = d.pick(["", "X", "Y", "nope"])
        elif what == 2 and m.graph.initializer:  # a tensor's dims
            t = m.graph.initializer[d.u8() % len(m.graph.initializer)]
            if t.dims:
                t.dims[d.u8() % len(t.dims)] = d.pick([0, 1, 2, 3, 16, -1, 2**40])
        elif what == 3 and m.graph.initializer:  # a tensor's data
            t = m.graph.initializer[d.u8() % len(m.graph.initializer)]
            t.raw_data = t.raw_data[: d.u32() % (len(t.raw_data) + 1)]
        else:  # a new attribute
            node.attribute.append(onnx.helper.make_attribute(
                d.pick(["hidden_size", "clip", "layout", "bogus", "input_forget"]),
                d.pick([1, 4, 0.5, "forward"])))
    return m.SerializeToString()


def _run_loaded(model) -> None:
    """A model a reader returned must work."""
    first = model.layers[0] if isinstance(model, fr.Sequential) else model
    x = np.zeros((2, 1, first.input_size), first.dtype)
    if getattr(first, "batch_first", False):
        x = x.transpose(1, 0, 2)
    model.forward(x, training=False)


def one_input(data: bytes) -> None:
    """The fuzz target: ValueError or a working model, nothing else."""
    d = Data(data)
    seeds = _seeds()
    kind = d.u8() % 4
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind in (0, 1):
            blob = _byte_edits(d, seeds["npz"]) if kind == 0 else _header_edit(d, seeds["npz"])
            if kind == 0 and d.chance(2):
                blob = _sign(blob)
            path = os.path.join(_DIR, "fuzz.npz")
            with open(path, "wb") as f:
                f.write(blob)
            try:
                ck = fr.load_checkpoint(path)
            except ValueError:
                return
            _run_loaded(ck.model)
            if ck.optimizer is not None:
                ck.optimizer.step()
        else:
            blob = _byte_edits(d, seeds["onnx"]) if kind == 2 else _onnx_edit(d, seeds["onnx"])
            path = os.path.join(_DIR, "fuzz.onnx")
            with open(path, "wb") as f:
                f.write(blob)
            try:
                model = fr.onnx.load(path)
            except ValueError:
                return
            _run_loaded(model)


def main() -> None:
    fuzz_api._cap_address_space()
    atheris = None
    try:
        import atheris
    except ImportError:
        pass
    fuzz_api.one_input = one_input  # the fallback runner calls fuzz_api.one_input
    if atheris is None:
        fuzz_api._fallback(sys.argv[1:])
        return
    fuzz_api.atheris = atheris
    fuzz_api._instrument()  # fusedrnn's functions
    for obj in list(globals().values()):  # and this decoder's
        if callable(obj) and getattr(obj, "__module__", None) == __name__ and hasattr(obj, "__code__"):
            atheris.instrument_func(obj)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
