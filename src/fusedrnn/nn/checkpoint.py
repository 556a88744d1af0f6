"""Checkpoints: a model's configuration and parameters (and optimiser state) in
one portable `.npz` file, read back without pickle.

    fr.save("model.npz", model, optimizer=opt, metadata={"vocab": chars})
    model = fr.load("model.npz")
    model, opt, metadata = fr.load_checkpoint("model.npz")

File layout (format version 1), a NumPy .npz (zip) archive with members:
    "__fusedrnn__"          uint8: the UTF-8 JSON header (below)
    "param/<key>"           every model parameter, keys as in `model.params`
    "optim/<buffer>/<key>"  optimiser buffers (Adam "m"/"v", SGD "momentum_buffer")
The zip comment (the file's last 64 bytes) is the hex SHA-256 of every byte
before it. The header: {"format": "fusedrnn-checkpoint", "format_version": 1,
"fusedrnn_version", "model": the configuration tree ({"type": "LSTM",
"config": {...}} or {"type": "Sequential", "layers": [...]}), "optimizer":
null or {"type", "hyper", "step", "buffers"}, "metadata": user JSON, "arrays":
{member: {"dtype", "shape", "sha256"}}}. Loading checks the file checksum and
every member against the header (names, dtype, shape, SHA-256), so a
truncated, corrupted or foreign file raises ValueError instead of producing a
wrong model. Members are stored uncompressed, and no array or layer larger
than what the file holds is allocated: member shapes are checked against
their bytes, and the parameter shapes the configuration implies against the
stored ones, before anything is built. Nothing is unpickled.

A layer's configuration is its constructor arguments, read back from the
attributes of the same names (seed excepted: the parameters are stored)."""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import tempfile
import warnings
import zipfile
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Type

import numpy as np

from ..core import _validate as V
from ..core._tracked import is_tracked
from . import optim as _optim

__all__ = ["save", "load", "load_checkpoint", "Checkpoint", "register_layer", "model_config",
           "model_from_config", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fusedrnn-checkpoint"
FORMAT_VERSION = 1
HEADER = "__fusedrnn__"
_DIGEST_LEN = 64  # hex SHA-256 of the whole file before it, stored as the zip comment
_SKIP_ARGS = ("self", "seed")

_LAYERS: Dict[str, Type[Any]] = {}
_OPTIMIZERS: Dict[str, Type[Any]] = {"SGD": _optim.SGD, "Adam": _optim.Adam}


def register_layer(cls: Type[Any], name: Optional[str] = None) -> Type[Any]:
    """Make a layer class known to `load` (the built-in layers are registered).
    Its constructor arguments must be readable as same-named attributes, or it
    must define `config() -> dict` of keyword arguments."""
    if not isinstance(cls, type):
        raise TypeError(f"cls must be a layer class, got {cls!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"name must be a non-empty str or None, got {name!r}")
    _builtin_layers()
    _LAYERS[name or cls.__name__] = cls
    return cls


def _builtin_layers() -> None:
    """Register LSTM, RNN, GRU, Linear and the quantized LSTM, RNN and GRU (once; imported
    late to avoid an import cycle)."""
    from ..core.gru import GRU
    from ..core.linear import Linear
    from ..core.lstm import LSTM
    from ..core.quantized import QuantizedGRU, QuantizedLSTM, QuantizedRNN
    from ..core.rnn import RNN
    for cls in (LSTM, RNN, GRU, Linear, QuantizedLSTM, QuantizedRNN, QuantizedGRU):
        _LAYERS.setdefault(cls.__name__, cls)


# -- configuration ---------------------------------------------------------------------------
def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise TypeError(f"cannot store {where}: its keys must be str (JSON), got {k!r}")
        return {k: _jsonable(v, where) for k, v in value.items()}
    raise TypeError(f"cannot store {where} = {value!r} ({type(value).__name__}) in a checkpoint")


def _from_json(value: Any) -> Any:
    """JSON lists come back as tuples (the form layer constructors take)."""
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def constructor_args(model: Any, cls: Optional[type] = None) -> Dict[str, Any]:
    """The named arguments of `cls.__init__` (default: the model's class), read from the
    model's attributes of the same names."""
    cls = type(model) if cls is None else cls
    cfg = {}
    for pname, prm in inspect.signature(cls.__init__).parameters.items():
        if pname in _SKIP_ARGS or prm.kind in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD):
            continue
        if not hasattr(model, pname):
            raise TypeError(f"cannot save a {type(model).__name__}: its constructor argument "
                            f"{pname!r} is not kept as an attribute of the same name")
        cfg[pname] = getattr(model, pname)
    return cfg


def model_config(model: Any) -> Dict[str, Any]:
    """The JSON-able configuration tree of a layer or a Sequential."""
    from ..core.sequential import Sequential
    _builtin_layers()
    if isinstance(model, Sequential):
        return {"type": "Sequential", "layers": [model_config(l) for l in model.layers]}
    name = type(model).__name__
    if _LAYERS.get(name) is not type(model):
        raise TypeError(f"cannot save a {name}: not a registered layer type "
                        f"(known: {sorted(_LAYERS)}; see fusedrnn.checkpoint.register_layer)")
    cfg = dict(model.config()) if callable(getattr(model, "config", None)) \
        else constructor_args(model)
    tree = {"type": name, "config": {k: _jsonable(v, f"{name}.{k}") for k, v in cfg.items()}}
    rng = getattr(model, "_dropout_rng", None)  # the layers' dropout stream, so training resumes exactly
    if isinstance(rng, np.random.Generator):
        tree["rng_state"] = _jsonable(rng.bit_generator.state, f"{name} dropout generator")
    return tree


def model_from_config(tree: Dict[str, Any]) -> Any:
    """Build a model (with fresh parameters) from a `model_config` tree."""
    from ..core.sequential import Sequential
    _builtin_layers()
    if not isinstance(tree, dict) or "type" not in tree:
        raise ValueError(f"bad model configuration: {tree!r}")
    _check_tree(tree, "the model configuration")
    if tree["type"] == "Sequential":
        return Sequential(*(model_from_config(t) for t in tree["layers"]))
    model = _from_layer_config(tree, lambda cls, kwargs: cls(**kwargs))
    state = tree.get("rng_state")
    rng = getattr(model, "_dropout_rng", None)
    if state is not None and isinstance(rng, np.random.Generator):
        try:
            rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ValueError(f"bad dropout generator state for {tree['type']}: {exc}") from exc
    return model


class _Planned(Exception):
    """Carries the parameter shapes and dtypes out of a probing constructor (see
    `_layer_plan`)."""

    def __init__(self, shapes: Dict[str, Tuple[int, ...]], dtypes: Dict[str, np.dtype]) -> None:
        super().__init__()
        self.shapes, self.dtypes = shapes, dtypes


def _layer_plan(cls: Type[Any], kwargs: Dict[str, Any]) -> Optional[Dict[str, Tuple[Tuple[int, ...], np.dtype]]]:
    """{key: (shape, dtype)} of the parameters that `cls(**kwargs)` would allocate,
    found without allocating them (None for a layer type it cannot tell).

    A recurrent layer's constructor is run on a subclass that stops at the point
    where the parameters would be allocated, so the checks and the shapes are the
    class's own. TypeError/ValueError for a configuration the class refuses."""
    from ..core._layer import RecurrentLayer
    from ..core.linear import Linear
    if issubclass(cls, RecurrentLayer):
        class Probe(cls):  # type: ignore[misc, valid-type]
            def _param_shapes(self) -> Dict[str, Tuple[int, ...]]:
                shapes = super()._param_shapes()
                # a quantized layer stores its reduced weights as int8 / uint16
                per_key = getattr(self, "_param_dtypes_for", None)
                raise _Planned(shapes, per_key(shapes) if per_key else
                               {k: self.dtype for k in shapes})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                Probe(**kwargs)
            except _Planned as plan:
                return {k: (tuple(shape), plan.dtypes[k]) for k, shape in plan.shapes.items()}
        return None  # pragma: no cover - the constructor no longer asks for the shapes
    if cls is Linear:
        extra = set(kwargs) - {"in_features", "out_features", "bias", "dtype"}
        if extra:
            raise TypeError(f"Linear got unexpected arguments {sorted(extra)}")
        I = V.positive_int(kwargs.get("in_features"), "in_features")
        O = V.positive_int(kwargs.get("out_features"), "out_features")
        dt = V.as_dtype(kwargs.get("dtype", np.float32))
        plan = {"W": ((O, I), dt)}
        if kwargs.get("bias", True) is True:
            plan["b"] = ((O,), dt)
        return plan
    return None


def _from_layer_config(tree: Dict[str, Any], build: Callable[[Type[Any], Dict[str, Any]], Any]) -> Any:
    """build(layer class, constructor keywords) for one layer's `model_config` tree;
    an unknown type or options its constructor refuses raise ValueError."""
    cls = _LAYERS.get(tree["type"])
    if cls is None:
        raise ValueError(f"unknown layer type {tree['type']!r} in checkpoint (known: "
                         f"{sorted(_LAYERS)}; see fusedrnn.checkpoint.register_layer)")
    kwargs = {k: _from_json(v) for k, v in tree.get("config", {}).items()}
    try:
        return build(cls, kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot rebuild {tree['type']} from its stored configuration: "
                         f"{exc} (configuration {kwargs})") from exc


def _model_plan(tree: Dict[str, Any]) -> Optional[Dict[str, Tuple[Tuple[int, ...], np.dtype]]]:
    """The parameters a `model_config` tree builds to ({key: (shape, dtype)}, keys as in
    `model.params`), without allocating them; None when a layer type cannot tell."""
    _builtin_layers()
    if tree["type"] == "Sequential":
        out: Dict[str, Tuple[Tuple[int, ...], np.dtype]] = {}
        for i, sub in enumerate(tree["layers"]):
            plan = _model_plan(sub)
            if plan is None:
                return None
            out.update({f"{i}.{k}": v for k, v in plan.items()})
        return out
    return _from_layer_config(tree, _layer_plan)


# -- save --------------------------------------------------------------------------------------
def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _optimizer_payload(model: Any, optimizer: Any) -> Dict[str, Any]:
    """The optimiser's state with its buffers keyed by the model's parameter keys."""
    if type(optimizer).__name__ not in _OPTIMIZERS:
        raise TypeError(f"cannot save optimiser {type(optimizer).__name__} "
                        f"(known: {sorted(_OPTIMIZERS)})")
    by_id = {id(p): k for k, p in model.params.items()}
    rename: Dict[str, str] = {}
    for key, p, _ in optimizer.groups:
        if id(p) not in by_id:
            raise ValueError(f"the optimiser's parameter {key!r} is not a parameter of the model "
                             "being saved")
        rename[key] = by_id[id(p)]
    if set(rename.values()) != set(by_id.values()):
        missing = sorted(set(by_id.values()) - set(rename.values()))
        raise ValueError(f"the optimiser does not cover the model parameters {missing}")
    sd = optimizer.state_dict()
    sd["state"] = {name: {rename[k]: a for k, a in bufs.items()} for name, bufs in sd["state"].items()}
    return sd


def save(path: "os.PathLike[str] | str", model: Any, optimizer: Any = None,
         metadata: Optional[Dict[str, Any]] = None) -> None:
    """Write `model` (configuration + parameters), optionally `optimizer`'s state
    and a JSON-able `metadata` dict, to `path` (exactly that name; written to a
    temporary file first, then renamed, so a crash never leaves half a file)."""
    from .. import __version__
    if not isinstance(getattr(model, "params", None), Mapping):
        raise TypeError(f"model must be a fusedrnn layer or Sequential (with .params), got "
                        f"{type(model).__name__}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict of JSON values (str keys) or None, got "
                        f"{type(metadata).__name__}")
    config = model_config(model)
    plan = _model_plan(config)
    arrays: Dict[str, np.ndarray] = {}
    for k, p in model.params.items():
        # floating point, or the integer storage a quantized layer's plan names
        planned = plan is not None and k in plan and isinstance(p, np.ndarray) \
            and p.dtype == plan[k][1]
        if not isinstance(p, np.ndarray) or (p.dtype.kind != "f" and not planned):
            raise TypeError(f"params[{k!r}] must be a floating-point numpy array, got "
                            f"{getattr(p, 'dtype', type(p).__name__)}")
        arrays[f"param/{k}"] = np.ascontiguousarray(p)
    if plan is not None:  # what load will rebuild must take these arrays
        if set(plan) != set(model.params):
            raise ValueError(f"params has keys {sorted(model.params)}, the model's configuration "
                             f"has {sorted(plan)}")
        for k, (shape, dt) in plan.items():
            p = model.params[k]
            if p.shape != shape or p.dtype != dt:
                raise ValueError(f"params[{k!r}] is {p.dtype}{p.shape}, the model's configuration "
                                 f"needs {dt}{shape}")
    opt_head = None
    if optimizer is not None:
        sd = _optimizer_payload(model, optimizer)
        opt_head = {"type": sd["type"], "hyper": _jsonable(sd["hyper"], "optimizer.hyper"),
                    "step": int(sd["step"]),
                    "buffers": {name: sorted(bufs) for name, bufs in sd["state"].items()}}
        for name, bufs in sd["state"].items():
            for k, a in bufs.items():
                arrays[f"optim/{name}/{k}"] = np.ascontiguousarray(a)
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "fusedrnn_version": __version__,
        "model": config, "optimizer": opt_head,
        "metadata": _jsonable(dict(metadata or {}), "metadata"),
        "arrays": {name: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _sha256(a)}
                   for name, a in arrays.items()},
    }
    blob = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.comment = b"0" * _DIGEST_LEN            # placeholder for the file checksum
        for name, a in ((HEADER, blob), *arrays.items()):
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, a, allow_pickle=False)
    data = bytearray(buf.getvalue())
    data[-_DIGEST_LEN:] = hashlib.sha256(bytes(data[:-_DIGEST_LEN])).hexdigest().encode("ascii")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fusedrnn-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- load --------------------------------------------------------------------------------------
class Checkpoint(NamedTuple):
    """What `load_checkpoint` returns."""

    model: Any
    optimizer: Any              # a rebuilt optimiser bound to `model`, or None
    metadata: Dict[str, Any]


def _key_mismatch(stored: Any, expected: Any) -> str:
    """Which parameter keys the file lacks and which it has in excess (a few of each)."""
    missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    def few(keys: List[str]) -> str:
        return str(keys[:5])[:-1] + (f", ... ({len(keys)} in all)]" if len(keys) > 5 else "]")
    return (f"the stored parameters do not match the {len(expected)} the configuration builds: "
            f"missing {few(missing)}, not expected {few(extra)}")


def _bad(path: str, why: str) -> ValueError:
    return ValueError(f"{path}: not a valid fusedrnn checkpoint: {why}")


class _Member(NamedTuple):
    """A checked .npy member, its data not read yet."""

    file: Any
    dtype: np.dtype
    shape: Tuple[int, ...]
    nbytes: int

    def read(self) -> np.ndarray:
        data = self.file.read(self.nbytes)
        if len(data) != self.nbytes:
            raise ValueError("truncated member")
        return np.frombuffer(data, self.dtype).reshape(self.shape).copy()


def _npy_member(zf: zipfile.ZipFile, name: str) -> _Member:
    """The .npy member `name`, its header read and
    checked against the member's size: what np.load would allocate is bounded by
    the bytes that are really there (a stored, uncompressed member of this file)."""
    info = zf.getinfo(name + ".npy")
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise ValueError(f"member {name!r} is compressed (fusedrnn.save stores members "
                         "uncompressed)")
    f = zf.open(info)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"member {name!r}: unsupported .npy format version {version}")
    if dtype.hasobject or fortran:
        raise ValueError(f"member {name!r} holds {'objects' if dtype.hasobject else 'a Fortran-order array'}")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > info.file_size - f.tell():
        raise ValueError(f"member {name!r} claims shape {list(shape)} of {dtype} ({nbytes} bytes), "
                         f"more than the {info.file_size} bytes it has")
    return _Member(f, dtype, tuple(shape), nbytes)


def _check_tree(tree: Any, where: str) -> None:
    """The model configuration tree has the types `model_config` writes."""
    if not isinstance(tree, dict) or not isinstance(tree.get("type"), str):
        raise ValueError(f"{where} must be a dict with a str 'type', got {tree!r}"[:300])
    if tree["type"] == "Sequential":
        layers = tree.get("layers")
        if not isinstance(layers, list) or not layers:
            raise ValueError(f"{where}['layers'] must be a non-empty list, got {layers!r}"[:300])
        for i, sub in enumerate(layers):
            _check_tree(sub, f"{where}['layers'][{i}]")
        return
    if not isinstance(tree.get("config", {}), dict):
        raise ValueError(f"{where}['config'] must be a dict, got {tree['config']!r}"[:300])
    if not isinstance(tree.get("rng_state", {}), dict):
        raise ValueError(f"{where}['rng_state'] must be a dict, got {tree['rng_state']!r}"[:300])


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_header(header: Dict[str, Any]) -> None:
    """Every field of the header has the type `save` writes (ValueError naming it)."""
    _check_tree(header.get("model"), "model")
    oh = header.get("optimizer")
    if oh is not None:
        if not isinstance(oh, dict):
            raise ValueError(f"optimizer must be a dict or null, got {oh!r}"[:300])
        if not isinstance(oh.get("type"), str):
            raise ValueError(f"optimizer['type'] must be a str, got {oh.get('type')!r}")
        if not isinstance(oh.get("hyper"), dict):
            raise ValueError(f"optimizer['hyper'] must be a dict, got {oh.get('hyper')!r}"[:300])
        if not _is_count(oh.get("step")):
            raise ValueError(f"optimizer['step'] must be an int >= 0, got {oh.get('step')!r}")
        bufs = oh.get("buffers")
        if not isinstance(bufs, dict) or not all(
                isinstance(v, list) and all(isinstance(k, str) for k in v) for v in bufs.values()):
            raise ValueError(f"optimizer['buffers'] must map buffer names to lists of "
                             f"parameter keys, got {bufs!r}"[:300])
    if not isinstance(header.get("metadata", {}), dict):
        raise ValueError(f"metadata must be a dict, got {header['metadata']!r}"[:300])
    arrays = header.get("arrays")
    if not isinstance(arrays, dict):
        raise ValueError(f"arrays must be a dict, got {arrays!r}"[:300])
    for name, m in arrays.items():
        if not (isinstance(m, dict) and isinstance(m.get("dtype"), str)
                and isinstance(m.get("shape"), list) and all(_is_count(n) for n in m["shape"])
                and isinstance(m.get("sha256"), str)):
            raise ValueError(f"arrays[{name!r}] must be {{'dtype': str, 'shape': [int >= 0, ...], "
                             f"'sha256': str}}, got {m!r}"[:300])


def _read(path: str) -> tuple:
    """(header, arrays) with every check of the file done; ValueError otherwise.

    Nothing is allocated beyond the file's own size before the claims (member
    headers, the header's shapes, the configuration's parameter shapes) agree."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise _bad(path, "not a regular file")  # a pipe or device would block or never end
    with open(path, "rb") as f:  # FileNotFoundError etc. propagate as they are
        if f.read(4) != b"PK\x03\x04":  # before reading a large foreign file whole
            raise _bad(path, "not an .npz (zip) archive")
        data = b"PK\x03\x04" + f.read()
    intact = hashlib.sha256(data[:-_DIGEST_LEN]).hexdigest().encode("ascii") == data[-_DIGEST_LEN:]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            files = zf.namelist()
            if len(set(files)) != len(files) or not all(n.endswith(".npy") for n in files):
                raise _bad(path, "the archive holds duplicate or foreign members")
            names = {n[:-len(".npy")] for n in files}
            if HEADER not in names:
                raise _bad(path, f"an .npz archive without the {HEADER!r} header "
                                 "(not written by fusedrnn.save)")
            head = _npy_member(zf, HEADER)
            if head.dtype != np.uint8 or len(head.shape) != 1:
                raise _bad(path, "malformed header")
            raw = head.read()
            header = json.loads(raw.tobytes().decode("utf-8"))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise _bad(path, "the header is not a fusedrnn checkpoint header")
            version = header.get("format_version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise _bad(path, f"bad format version {version!r}")
            if version > FORMAT_VERSION:
                raise _bad(path, f"format version {version} is newer than this fusedrnn "
                                 f"supports ({FORMAT_VERSION}); upgrade fusedrnn")
            if not intact:
                raise _bad(path, "the file is corrupted (file checksum mismatch: its SHA-256 "
                                 "differs from the one written with it)")
            _check_header(header)
            meta = header["arrays"]
            if set(meta) != names - {HEADER}:
                raise _bad(path, "the archive's members do not match its header")
            members = {}
            for name, m in meta.items():
                member = _npy_member(zf, name)
                if member.dtype.str != m["dtype"] or list(member.shape) != list(m["shape"]):
                    raise _bad(path, f"member {name!r} is {member.dtype.str}"
                                     f"{list(member.shape)}, the header says "
                                     f"{m['dtype']}{m['shape']}")
                members[name] = member
            plan = _model_plan(header["model"])
            if plan is not None:  # the configuration builds exactly the stored parameters
                stored = {n[len("param/"):]: n for n in meta if n.startswith("param/")}
                if set(stored) != set(plan):
                    raise _bad(path, _key_mismatch(stored, plan))
                for k, (pshape, pdt) in plan.items():
                    m = meta[stored[k]]
                    if tuple(m["shape"]) != pshape or np.dtype(m["dtype"]) != pdt:
                        raise _bad(path, f"parameter {k!r} is {np.dtype(m['dtype'])}"
                                         f"{tuple(m['shape'])}, the model built from the "
                                         f"configuration expects {pdt}{pshape}")
            arrays = {}
            for name, member in members.items():
                a = member.read()
                if _sha256(a) != meta[name]["sha256"]:
                    raise _bad(path, f"member {name!r} is corrupted (checksum mismatch)")
                arrays[name] = a
    except ValueError as exc:
        if str(exc).startswith(f"{path}: not a valid"):
            raise
        raise _bad(path, str(exc)) from exc
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except zipfile.BadZipFile as exc:
        raise _bad(path, f"damaged or truncated archive ({exc})") from exc
    except Exception as exc:  # zlib.error, EOFError, KeyError, JSONDecodeError, ...
        raise _bad(path, f"{type(exc).__name__}: {exc}") from exc
    return header, arrays


def load_checkpoint(path: "os.PathLike[str] | str") -> Checkpoint:
    """Read a checkpoint written by `save`: the model rebuilt from its
    configuration with the stored parameters (bit-exact), the optimiser (if one
    was saved) rebuilt on that model with its state, and the metadata.
    Raises ValueError for a wrong, truncated, corrupted or foreign file."""
    path = os.fspath(path)
    header, arrays = _read(path)
    try:
        model = model_from_config(header["model"])
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise _bad(path, f"model configuration: {exc}") from exc
    params = model.params
    stored = {n[len("param/"):]: a for n, a in arrays.items() if n.startswith("param/")}
    if set(stored) != set(params):
        raise _bad(path, _key_mismatch(stored, params))
    for k, p in params.items():
        a = stored[k]
        if a.shape != p.shape or a.dtype != p.dtype:
            raise _bad(path, f"parameter {k!r} is {a.dtype}{a.shape}, the model built from the "
                             f"configuration expects {p.dtype}{p.shape}")
        if is_tracked(p) or p.flags.writeable:  # a tracked array counts the write itself
            p[...] = a
        else:  # a quantized layer's parameters are read-only
            p.flags.writeable = True
            p[...] = a
            p.flags.writeable = False
    optimizer = None
    oh = header.get("optimizer")
    if oh is not None:
        cls = _OPTIMIZERS.get(oh.get("type"))
        if cls is None:
            raise _bad(path, f"unknown optimiser type {oh.get('type')!r}")
        try:
            state = {name: {k: arrays[f"optim/{name}/{k}"] for k in keys}
                     for name, keys in oh["buffers"].items()}
            optimizer = cls(model, **oh["hyper"])
            optimizer.load_state_dict({"type": oh["type"], "hyper": oh["hyper"],
                                       "step": oh["step"], "state": state})
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise _bad(path, f"optimiser state: {exc}") from exc
    return Checkpoint(model, optimizer, dict(header.get("metadata") or {}))


def load(path: "os.PathLike[str] | str") -> Any:
    """The model stored in a checkpoint (see `load_checkpoint` for the optimiser)."""
    return load_checkpoint(path).model
