"""Exact weight mapping between fusedrnn layers and Keras 3 recurrent layers:
`keras.layers.LSTM` <-> `fr.LSTM`, `keras.layers.GRU` <-> `fr.GRU`,
`keras.layers.SimpleRNN` <-> `fr.RNN`, and `keras.layers.Bidirectional` of any of
them <-> bidirectional=True.

Keras stores the transposes of fusedrnn's matrices:
    LSTM       kernel (I, 4H) = W_x.T, recurrent_kernel (H, 4H) = W_v.T, bias (4H,) = b,
               gates (i, f, c, o) = fusedrnn's (cu, cs, du, cr)
    GRU        kernel (I, 3H), recurrent_kernel (H, 3H): W_x.T, W_h.T with the gates
               reordered from fusedrnn's (r, z, n) to Keras' (z, r, h);
               reset_after=True (linear_before_reset=True): bias (2, 3H) = [input
               bias; recurrent bias], b = the sum in the z, r rows, b_n = the input
               bias and b_hn = the recurrent bias in the h rows;
               reset_after=False (linear_before_reset=False): bias (3H,) = b
    SimpleRNN  kernel (I, H) = W_x.T, recurrent_kernel (H, H) = W_r.T, bias (H,) = theta_s
use_bias=False is b = 0 (theta_s = 0); go_backwards=True is reverse=True. Keras
layers are batch-major, so the fusedrnn layer of `from_keras` is batch_first.

Two conventions differ, and only in the returned sequence, never in the states:
  * a go_backwards layer returns its sequence in the order it read it (last step
    first); fusedrnn keeps every output at its time index, so y_fusedrnn =
    y_keras[:, ::-1] (Keras' Bidirectional flips it back itself);
  * at masked steps Keras repeats the last output unless zero_output_for_mask=True;
    fusedrnn writes 0 there (lengths are post-padding masks: mask[b, :lengths[b]]).
`to_keras` builds its layers with zero_output_for_mask=True.

Only the function is mapped: Keras' initializers, regularizers and constraints
(training settings) are not carried over. What fusedrnn cannot compute is refused
by name: activations other than Keras' tanh, sigmoid, relu, hard_sigmoid, linear,
elu, softsign and softplus (activation and recurrent_activation map to the
warping functions, docs/equations.md §9), input and recurrent dropout,
merge modes other than "concat", float16 / mixed precision.

Only get_weights / set_weights (NumPy) are used, so any Keras backend works.
keras is imported lazily: it is an optional dependency."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..core._layer import suffix

# Keras' activations by name, as fusedrnn's warping functions (docs/equations.md §9); Keras 3's
# hard_sigmoid is relu6(x + 3) / 6 = clip(x / 6 + 1/2, 0, 1)
_KERAS_WARPS = {"tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu",
                "hard_sigmoid": ("hardsigmoid", 1.0 / 6.0, 0.5), "linear": ("affine", 1.0, 0.0),
                "elu": ("elu", 1.0), "softsign": "softsign", "softplus": "softplus"}
# the Keras activation options of each layer and the fusedrnn options they set
_LSTM_WARPS = {"activation": ("cell_activation", "output_activation"),
               "recurrent_activation": ("gate_activation",)}
_RNN_WARPS = {"activation": ("activation",)}
_GRU_WARPS = {"activation": ("cell_activation",), "recurrent_activation": ("gate_activation",)}
_GRU_ORDER = (1, 0, 2)  # Keras' (z, r, h) from fusedrnn's (r, z, n), and back


def _gates(m: np.ndarray, order: Tuple[int, ...]) -> np.ndarray:
    """The gate blocks of m's first axis (len(order) equal blocks) in `order`."""
    blocks = np.split(m, len(order))
    return np.concatenate([blocks[k] for k in order])


def _keras() -> Any:
    try:
        import keras
    except ImportError as exc:  # pragma: no cover - exercised only without keras
        raise ImportError("this needs Keras 3 and one of its backends: pip install keras "
                          f"(KERAS_BACKEND=torch runs it on PyTorch); importing it failed: {exc}"
                          ) from exc
    return keras


def _name_of(value: Any) -> Any:
    """The Keras name of an activation in a layer config (a str, or a serialised dict)."""
    if isinstance(value, dict):
        return value.get("config", value.get("class_name", value))
    return value


def _cell_layers(layer: Any, kind: str) -> Tuple[List[Any], bool]:
    """The Keras layers of each direction (forward first) and whether bidirectional."""
    keras = _keras()
    cls = getattr(keras.layers, kind)
    if isinstance(layer, keras.layers.Bidirectional):
        fwd, bwd = layer.forward_layer, layer.backward_layer
        if not isinstance(fwd, cls) or not isinstance(bwd, cls):
            raise TypeError(f"expected keras.layers.Bidirectional of a keras.layers.{kind}, got "
                            f"one of {type(fwd).__name__} / {type(bwd).__name__}")
        if layer.merge_mode != "concat":
            raise ValueError(f"keras.layers.Bidirectional merge_mode={layer.merge_mode!r}: fusedrnn "
                             "concatenates the two directions (merge_mode='concat' only)")
        if fwd.go_backwards or not bwd.go_backwards:
            raise ValueError("keras.layers.Bidirectional: the forward layer must read forwards and "
                             "the backward layer backwards (go_backwards)")
        return [fwd, bwd], True
    if not isinstance(layer, cls):
        raise TypeError(f"expected a keras.layers.{kind} or a keras.layers.Bidirectional of one, "
                        f"got {type(layer).__name__}")
    return [layer], False


def _check_config(layer: Any, kind: str, activations: Dict[str, str]) -> Dict[str, Any]:
    cfg = layer.get_config()
    for key, want in activations.items():
        got = _name_of(cfg.get(key, want))
        if got != want:
            raise ValueError(f"keras.layers.{kind} {key}={got!r}: fusedrnn's {kind} warps with "
                             f"{want} here ({key}={want!r} only)")
    for key in ("dropout", "recurrent_dropout"):
        if float(cfg.get(key, 0.0) or 0.0) != 0.0:
            raise ValueError(f"keras.layers.{kind} {key}={cfg[key]}: fusedrnn has no {key} inside "
                             "the cell (Keras applies it in training only: for inference, build "
                             f"the layer with {key}=0 and copy the weights)")
    dtypes = {str(np.dtype(layer.dtype)), str(np.dtype(layer.compute_dtype))}
    if len(dtypes) != 1 or not dtypes <= {"float32", "float64"}:
        raise ValueError(f"keras.layers.{kind} dtype {layer.dtype} / compute dtype "
                         f"{layer.compute_dtype}: fusedrnn computes in float32 or float64")
    if not layer.built:
        raise ValueError(f"the keras.layers.{kind} has no weights yet: build it first (call it on "
                         "an input, or layer.build((None, None, input_size)))")
    return cfg


def _warps_from_keras(cfg: Dict[str, Any], kind: str, warps: Dict[str, Tuple[str, ...]]
                      ) -> Dict[str, Any]:
    """fusedrnn's warping options from a Keras layer config's activations."""
    out: Dict[str, Any] = {}
    for key, ours in warps.items():
        got = _name_of(cfg.get(key))
        if not isinstance(got, str) or got not in _KERAS_WARPS:
            raise ValueError(f"keras.layers.{kind} {key}={got!r}: fusedrnn computes the Keras "
                             f"activations {sorted(_KERAS_WARPS)} only")
        out.update({o: _KERAS_WARPS[got] for o in ours})
    return out


def _warps_to_keras(layer: Any, kind: str, warps: Dict[str, Tuple[str, ...]]
                    ) -> Tuple[Dict[str, str], List[str]]:
    """The Keras activation options of a fusedrnn layer, and what cannot be written."""
    from ..core import _activations as _acts
    by_fn = {_acts.parse(v): k for k, v in _KERAS_WARPS.items()}
    opts: Dict[str, str] = {}
    blocked: List[str] = []
    for key, ours in warps.items():
        values = {f for o in ours
                  for f in _acts.per_direction(getattr(layer, o), layer.num_directions, o)}
        if len(values) != 1 or next(iter(values)) not in by_fn:
            blocked.append(f"{key} for {' and '.join(f'{o}={getattr(layer, o)!r}' for o in ours)}"
                           f" (one Keras activation of {sorted(_KERAS_WARPS)}, the same for "
                           "both directions" + (" and for the cell input and the readout"
                                                if len(ours) > 1 else "") + ")")
        else:
            opts[key] = by_fn[next(iter(values))]
    return opts, blocked


def _weights(layer: Any, use_bias: bool) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    ws = layer.get_weights()
    kernel, recurrent = ws[0], ws[1]
    return kernel, recurrent, (ws[2] if use_bias else None)


def _plain_params(out: Any, k: np.ndarray, r: np.ndarray, b: Optional[np.ndarray],
                  names: Tuple[str, str, str]) -> Dict[str, Any]:
    """fusedrnn parameters (without the cell suffix) of one Keras direction whose
    weights are the transposes of fusedrnn's, in the same gate order."""
    W_x, W_h, bias = names
    return {W_x: k.T, W_h: r.T, bias: 0 if b is None else b}


def _from_keras(cls: Any, layer: Any, kind: str, activations: Dict[str, str],
                names: Tuple[str, str, str], params_of: Any = _plain_params,
                options: Optional[Dict[str, str]] = None,
                warps: Optional[Dict[str, Tuple[str, ...]]] = None) -> Any:
    """params_of(the new layer, kernel, recurrent_kernel, bias or None, names) ->
    the params of one direction; options: Keras config key -> the `cls` option
    that takes its value (the directions must agree on it)."""
    options = options or {}
    cells, bidirectional = _cell_layers(layer, kind)
    cfgs = [_check_config(c, kind, activations) for c in cells]
    keys = ("units", "use_bias", *activations, *options, *(warps or {}))
    if bidirectional and any(cfgs[0].get(k) != cfgs[1].get(k) for k in keys):
        raise ValueError("keras.layers.Bidirectional: the two directions differ in "
                         f"{[k for k in keys if cfgs[0].get(k) != cfgs[1].get(k)]}; fusedrnn's "
                         "directions share their configuration")
    first = cells[0]
    units, use_bias = int(cfgs[0]["units"]), bool(cfgs[0]["use_bias"])
    kernel = first.get_weights()[0]
    opts: Dict[str, Any] = dict(bidirectional=bidirectional, batch_first=True,
                                reverse=bool(first.go_backwards) and not bidirectional,
                                dtype=np.dtype(first.dtype), seed=0)
    if kind == "LSTM":
        opts["peepholes"] = None
    opts.update({ours: bool(cfgs[0][key]) for key, ours in options.items()})
    if warps:
        opts.update(_warps_from_keras(cfgs[0], kind, warps))
    out = cls(kernel.shape[0], units, **opts)
    for d, c in enumerate(cells):
        k, r, b = _weights(c, use_bias)
        s = suffix(0, d)
        for n, value in params_of(out, k, r, b, names).items():
            out.params[n + s][...] = value
    return out


def _plain_weights(layer: Any, s: str, names: Tuple[str, str, str]) -> List[np.ndarray]:
    """Keras weights [kernel, recurrent_kernel, bias] of direction suffix s, the
    transposes of fusedrnn's in the same gate order."""
    W_x, W_h, bias = names
    return [layer.params[W_x + s].T, layer.params[W_h + s].T, layer.params[bias + s]]


def _to_keras(layer: Any, kind: str, blocked: List[str], names: Tuple[str, str, str],
              return_sequences: bool, return_state: bool, name: Optional[str],
              weights_of: Any = _plain_weights, **options: Any) -> Any:
    """weights_of(layer, cell suffix, names) -> the Keras weights of one direction;
    options: more constructor options of the Keras layer."""
    keras = _keras()
    if layer.num_layers != 1:
        blocked = blocked + [f"num_layers={layer.num_layers} (one Keras layer is one layer: "
                             "stack them in a keras.Sequential)"]
    if blocked:
        raise ValueError(f"keras.layers.{kind} has no {', '.join(blocked)}: this "
                         f"{type(layer).__name__} cannot be converted to it")
    cls = getattr(keras.layers, kind)
    dtype = np.dtype(layer.dtype).name
    opts: Dict[str, Any] = dict(return_sequences=return_sequences, return_state=return_state,
                                zero_output_for_mask=True, dtype=dtype, **options)

    def make(go_backwards: bool, layer_name: Optional[str]) -> Any:
        return cls(layer.hidden_size, go_backwards=go_backwards, name=layer_name, **opts)

    if layer.bidirectional:
        out = keras.layers.Bidirectional(make(False, None), backward_layer=make(True, None),
                                         merge_mode="concat", name=name)
        out.build((None, None, layer.input_size))
        directions = [out.forward_layer, out.backward_layer]
    else:
        out = make(layer.reverse, name)
        out.build((None, None, layer.input_size))
        directions = [out]
    for d, kl in enumerate(directions):
        kl.set_weights(weights_of(layer, suffix(0, d), names))
    return out


def lstm_from_keras(cls: Any, layer: Any) -> Any:
    return _from_keras(cls, layer, "LSTM", {}, ("W_x", "W_v", "b"), warps=_LSTM_WARPS)


def lstm_to_keras(layer: Any, return_sequences: bool, return_state: bool,
                  name: Optional[str]) -> Any:
    blocked = [what for what, on in (("peepholes", layer.peepholes != "none"),
                                     ("proj_size (projection)", layer.proj_size > 0),
                                     ("context windows", layer.context != (0, 0)),
                                     ("coupled gates", layer.coupled_gates),
                                     ("cell_clip", layer.cell_clip is not None),
                                     ("accumulation_clip", layer.accumulation_clip is not None))
               if on]
    warps, more = _warps_to_keras(layer, "LSTM", _LSTM_WARPS)
    return _to_keras(layer, "LSTM", blocked + more, ("W_x", "W_v", "b"), return_sequences,
                     return_state, name, **warps)


def rnn_from_keras(cls: Any, layer: Any) -> Any:
    return _from_keras(cls, layer, "SimpleRNN", {}, ("W_x", "W_r", "theta_s"), warps=_RNN_WARPS)


def rnn_to_keras(layer: Any, return_sequences: bool, return_state: bool,
                 name: Optional[str]) -> Any:
    blocked = ["state feedback W_s (state_feedback=True)"] if layer.state_feedback else []
    if layer.accumulation_clip is not None:
        blocked.append("accumulation_clip")
    warps, more = _warps_to_keras(layer, "SimpleRNN", _RNN_WARPS)
    return _to_keras(layer, "SimpleRNN", blocked + more, ("W_x", "W_r", "theta_s"),
                     return_sequences, return_state, name, **warps)


def _gru_params(out: Any, k: np.ndarray, r: np.ndarray, b: Optional[np.ndarray],
                names: Tuple[str, str, str]) -> Dict[str, Any]:
    """fr.GRU parameters of one keras.layers.GRU direction (see the module doc)."""
    H, reset_after = r.shape[0], out.linear_before_reset
    params: Dict[str, Any] = {"W_x": _gates(k.T, _GRU_ORDER), "W_h": _gates(r.T, _GRU_ORDER)}
    if b is None:
        b = np.zeros((2, 3 * H) if reset_after else (3 * H,), k.dtype)
    if reset_after:  # [input bias; recurrent bias]; the recurrent h rows stay inside r
        params["b"] = _gates(b[0] + np.concatenate([b[1][:2 * H], np.zeros(H, b.dtype)]),
                             _GRU_ORDER)
        params["b_hn"] = b[1][2 * H:]
    else:
        params["b"] = _gates(b, _GRU_ORDER)
    return params


def _gru_weights(layer: Any, s: str, names: Tuple[str, str, str]) -> List[np.ndarray]:
    """The keras.layers.GRU weights of fr.GRU direction suffix s."""
    p = layer.params
    b = _gates(p["b" + s], _GRU_ORDER)
    if layer.linear_before_reset:
        H = layer.hidden_size
        b = np.stack([b, np.concatenate([np.zeros(2 * H, b.dtype), p["b_hn" + s]])])
    return [_gates(p["W_x" + s], _GRU_ORDER).T, _gates(p["W_h" + s], _GRU_ORDER).T, b]


def gru_from_keras(cls: Any, layer: Any) -> Any:
    return _from_keras(cls, layer, "GRU", {}, ("W_x", "W_h", "b"), _gru_params,
                       {"reset_after": "linear_before_reset"}, warps=_GRU_WARPS)


def gru_to_keras(layer: Any, return_sequences: bool, return_state: bool,
                 name: Optional[str]) -> Any:
    blocked = ["accumulation_clip"] if layer.accumulation_clip is not None else []
    warps, more = _warps_to_keras(layer, "GRU", _GRU_WARPS)
    return _to_keras(layer, "GRU", blocked + more, ("W_x", "W_h", "b"), return_sequences,
                     return_state, name, _gru_weights, reset_after=layer.linear_before_reset,
                     **warps)
