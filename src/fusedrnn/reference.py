"""Plain NumPy oracle of the canonical RNN, the Vanilla LSTM and the augmented LSTM
(Sherstinsky 2020), the GRU, and of stacked / bidirectional networks of them.

This module is the readable reference that the fused C kernel is tested against.
It is written to be obviously right, never fast: one Python loop over time,
forward over the visited steps and backward over them in the opposite order,
using the signal names of the paper and of docs/equations.md, whose equation numbers
the comments cite, so the code can be read line by line next to the equations.  It never imports the
C kernel.

Conventions
-----------
* Time-major arrays: a sequence is (T, B, features); a state is (B, H).
  Inside the loop every signal is a (B, .) array, i.e. the batch is the only
  vectorised axis.
* Row vectors: the paper's column-vector product ``W x`` is written ``x @ W.T``
  and ``W^T psi`` is written ``psi @ W``.
* Computation happens in the dtype of ``x`` (float32 or float64); parameters and
  initial states are cast to it.
* Parameters use the fused storage of the C kernel (H = hidden, I = input size):

  LSTM: "W_x" (4H, K*I) = [W_xcu; W_xcs; W_xdu; W_xcr]; with a context window
        (L_past, L_future), K = L_past + 1 + L_future and column block k (I wide)
        multiplies x[n + k - L_past] (K = 1 without a window).
        "W_v" (4H, R) likewise, R = P with a projection, else H.
        "b" (4H,) = [b_cu; b_cs; b_du; b_cr].
        Peepholes: "w_s" (3, H) = [w_scu; w_scs; w_scr] (diagonal), or
        "W_s" (3, H, H) = [W_scu; W_scs; W_scr] (full matrices), or neither key.
        "W_qv" (P, H): recurrent projection q[n] = W_qv v[n] (paper §6; docs/equations.md §3b).
        Gate order (cu, cs, du, cr) is PyTorch's (i, f, g, o).
  RNN:  "W_x" (H, I), "W_r" (H, H), "theta_s" (H,), and "W_s" (H, H) only when
        the linear state feedback is on.
  GRU:  "W_x" (3H, I) = [W_xr; W_xz; W_xn], "W_h" (3H, H) likewise, "b" (3H,) =
        [b_r; b_z; b_n] and, with linear_before_reset, "b_hn" (H,).  Gate order
        (r, z, n) is PyTorch's.

* The LSTM's output and recurrent feedback is called y below: y = v without a
  projection, y = q = W_qv v with one; R is its width.
* Gradients of the final state enter at the last visited step: the backward loop
  starts from f_chi = dE/dy_T (dE/dr_T for the RNN) and f_psi = dE/ds_T, where
  f_chi, f_psi are what flows into a step from the step visited after it.
  ``None`` means zero.
* The LSTM readout-gate peephole sees the NEW state s[n] (after the cell clip);
  the update and state gate peepholes see s[n-1].  The warping functions default to
  G_c = sigmoid, G_d = tanh (for u and for r), G = tanh, and may be any of `warp`'s
  (options gate_activation, cell_activation, output_activation; activation for the RNN;
  gate_activation, cell_activation for the GRU's f and g; docs/equations.md §9).
* Variable lengths and direction: row b has lengths[b] valid steps (default T).
  The cell visits them in the order n = 0..lengths[b]-1 (forward) or
  n = lengths[b]-1..0 (reverse=True); visit step k of row b is time index
  order[k, b], and order[k, b] = -1 marks a padding visit (k >= lengths[b]).  A
  padding visit freezes the state, writes a zero output and passes the gradients
  through unchanged; outputs are stored at their original time index.  Without
  lengths and with reverse=False, k = n and nothing changes from the Vanilla LSTM.
* Clips (docs/equations.md §3c): where a value is clipped its gradient is zero; the derivative
  at exactly |value| = c is taken as 1 (``|value| <= c``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .core import _activations as _acts
from .core._activations import Activation

Params = Dict[str, np.ndarray]
GATES = ("cu", "cs", "du", "cr")  # control update, control state, data update, control readout
PEEPHOLE_GATES = ("cu", "cs", "cr")
LSTM_CELL_OPTIONS = ("coupled_gates", "cell_clip", "accumulation_clip", "context", "precision",
                     "gate_activation", "cell_activation", "output_activation")
RNN_CELL_OPTIONS = ("activation", "accumulation_clip")
GRU_CELL_OPTIONS = ("gate_activation", "cell_activation", "accumulation_clip")
ACTIVATION_OPTIONS = ("gate_activation", "cell_activation", "output_activation", "activation")
# Reduced precision (§7): the weights of these products are stored in bf16 (uint16 bit
# patterns) or int8 (with float32 scales per row under name + "_scale").
REDUCED_LSTM = ("W_x", "W_v", "W_qv")
REDUCED_RNN = ("W_x", "W_r")
REDUCED_GRU = ("W_x", "W_h")
# "bf16_pairs": bf16 with each pair of products (k = 2j, 2j + 1) added odd one first, as
# the vdpbf16ps instruction does; "bf16" adds them in k order.
PRECISIONS = ("bf16", "bf16_pairs", "int8")
GRU_GATES = ("r", "z", "n")  # reset, update, new (candidate); PyTorch's order


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """Logistic sigmoid, written via tanh so it never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * a))


# ----------------------------------------------------------------------------------------------
# Warping functions (docs/equations.md §9): G (RNN), G_c and G_d (LSTM), f and g (GRU)
# ----------------------------------------------------------------------------------------------

def warp(act: Any, a: np.ndarray) -> np.ndarray:
    """The warping function `act` (a name, a (name, alpha[, beta]) tuple or an
    Activation) applied to the accumulation a, element-wise, in a's dtype."""
    f = activation(act)
    al, be = a.dtype.type(f.alpha), a.dtype.type(f.beta)
    one, zero = a.dtype.type(1), a.dtype.type(0)
    if f.name == "sigmoid":
        return _sigmoid(a)
    if f.name == "tanh":
        return np.tanh(a)
    if f.name == "relu":
        return np.maximum(a, zero)
    if f.name == "hardsigmoid":
        return np.clip(al * a + be, zero, one)
    if f.name == "affine":
        return al * a + be
    if f.name == "leakyrelu":
        return np.where(a >= 0, a, al * a)
    if f.name == "thresholdedrelu":
        return np.where(a > al, a, zero)
    if f.name == "scaledtanh":
        return al * np.tanh(be * a)
    if f.name == "elu":
        return np.where(a >= 0, a, al * np.expm1(np.minimum(a, zero)))
    if f.name == "softsign":
        return a / (one + np.abs(a))
    return np.logaddexp(zero, a)                       # softplus: log(1 + e^a), never overflows


def warp_grad(act: Any, a: np.ndarray) -> np.ndarray:
    """The derivative of `warp(act, .)` at a. At a kink it is the left derivative:
    relu'(0) = 0, leakyrelu'(0) = elu'(0) = alpha, thresholdedrelu'(alpha) = 0;
    hardsigmoid' is alpha strictly inside (0, 1) and 0 where it saturates."""
    f = activation(act)
    al, be = a.dtype.type(f.alpha), a.dtype.type(f.beta)
    one, zero = a.dtype.type(1), a.dtype.type(0)
    if f.name == "sigmoid":
        g = _sigmoid(a)
        return g * (one - g)
    if f.name == "tanh":
        return one - np.tanh(a) ** 2
    if f.name == "relu":
        return (a > 0).astype(a.dtype)
    if f.name == "hardsigmoid":
        z = al * a + be
        return np.where((z > 0) & (z < 1), al, zero)
    if f.name == "affine":
        return np.full_like(a, al)
    if f.name == "leakyrelu":
        return np.where(a > 0, one, al)
    if f.name == "thresholdedrelu":
        return (a > al).astype(a.dtype)
    if f.name == "scaledtanh":
        return al * be * (one - np.tanh(be * a) ** 2)
    if f.name == "elu":
        return np.where(a > 0, one, al * np.exp(np.minimum(a, zero)))
    if f.name == "softsign":
        return one / (one + np.abs(a)) ** 2
    return _sigmoid(a)                                 # softplus' = sigma


def activation(spec: Any) -> Activation:
    """The Activation that `spec` names (see fusedrnn.core._activations)."""
    return _acts.parse(spec)


activation_ = activation  # for functions with an argument named activation


def _cast(params: Params, dtype, reduced: Sequence[str] = ()) -> Params:
    """Copies of the parameters in `dtype` (so later in-place updates do not affect the cache);
    the reduced-precision weights named in `reduced` (and their scales) keep their dtype."""
    keep = set(reduced) | {name + "_scale" for name in reduced}
    return {k: np.array(v, dtype=None if k in keep else dtype) for k, v in params.items()}


def _reduced(precision: Optional[str], dt, params: Params, names: Sequence[str]) -> Sequence[str]:
    """Checks a cell's precision option (§7): the names of its reduced weights present."""
    if precision is None:
        return ()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be None, 'bf16', 'bf16_pairs' or 'int8', got "
                         f"{precision!r}")
    if dt != np.float32:
        raise ValueError(f"reduced precision computes in float32; x is {dt}")
    want = np.int8 if precision == "int8" else np.uint16
    present = [n for n in names if n in params]
    for n in present:
        if np.asarray(params[n]).dtype != want:
            raise ValueError(f"{precision}: params[{n!r}] must be {np.dtype(want).name}, "
                             f"got {np.asarray(params[n]).dtype}")
        if precision == "int8" and n + "_scale" not in params:
            raise ValueError(f"int8: params[{n + '_scale'!r}] (the row scales) is missing")
    return present


def _product(A: np.ndarray, p: Params, name: str, precision: Optional[str],
             rows: slice = slice(None)) -> np.ndarray:
    """A (M, K) @ W.T for the weight W = p[name][rows] (N, K), in float or reduced precision
    (§7; int8 with the scales of those rows)."""
    if precision is None:
        return A @ p[name][rows].T
    if precision == "int8":
        return matmul_int8(A, p[name][rows], p[name + "_scale"][rows])
    return matmul_bf16(A, p[name][rows], pairs=precision == "bf16_pairs")


def _state(z: Optional[np.ndarray], B: int, H: int, dtype) -> np.ndarray:
    """An initial state or a final-state gradient: (B, H) in `dtype`; None -> zeros."""
    return np.zeros((B, H), dtype) if z is None else np.asarray(z, dtype=dtype).reshape(B, H)


def _clip(a: np.ndarray, c: Optional[float]) -> np.ndarray:
    """clip(a, -c, c); no clip for c None."""
    return a if c is None else np.clip(a, -c, c)


def _clip_grad(a: np.ndarray, c: Optional[float]) -> np.ndarray:
    """d clip(a) / da: 1 where |a| <= c, else 0 (all ones for c None), in a's dtype."""
    return np.ones_like(a) if c is None else (np.abs(a) <= c).astype(a.dtype)


def _lengths(lengths, T: int, B: int) -> np.ndarray:
    """Validated lengths (B,) as int64; None -> all T."""
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    lens = np.asarray(lengths)
    if lens.shape != (B,) or not np.issubdtype(lens.dtype, np.integer):
        raise ValueError(f"lengths must be an int array of shape ({B},), got {lens.dtype} {lens.shape}")
    if (lens < 0).any() or (lens > T).any():
        raise ValueError(f"lengths must be in [0, T = {T}], got {lens}")
    return lens.astype(np.int64)


def _visit_order(lens: np.ndarray, T: int, reverse: bool) -> np.ndarray:
    """order (T, B): the time index that row b visits at step k, or -1 for padding.

    Forward: order[k, b] = k for k < lengths[b].  Reverse: order[k, b] = lengths[b]-1-k,
    i.e. the row's valid part backwards, starting at its own last valid step."""
    k = np.arange(T)[:, None]
    valid = k < lens[None, :]
    n = (lens[None, :] - 1 - k) if reverse else np.broadcast_to(k, valid.shape)
    return np.where(valid, n, -1)


def _row_mask(order_k: np.ndarray, dt) -> np.ndarray:
    """(B, 1) mask of the rows whose visit is a real step (1) rather than padding (0)."""
    return (order_k >= 0).astype(dt)[:, None]


def _gather(seq: np.ndarray, order_k: np.ndarray) -> np.ndarray:
    """seq[order[k, b], b] for every row b (padding rows read time 0; callers mask them)."""
    return seq[np.maximum(order_k, 0), np.arange(seq.shape[1])]


def _scatter(seq: np.ndarray, order_k: np.ndarray, value: np.ndarray) -> None:
    """seq[order[k, b], b] = value[b] for the rows that are not padding."""
    rows = np.flatnonzero(order_k >= 0)
    seq[order_k[rows], rows] = value[rows]


# ----------------------------------------------------------------------------------------------
# External input context window (docs/equations.md §3a) as an unfolding of the input
# ----------------------------------------------------------------------------------------------

def _context(context) -> Tuple[int, int]:
    try:
        L_past, L_future = (int(c) for c in context)
    except (TypeError, ValueError):
        raise ValueError(f"context must be a pair (L_past, L_future), got {context!r}") from None
    if L_past < 0 or L_future < 0:
        raise ValueError(f"context sizes must be >= 0, got {context!r}")
    return L_past, L_future


def _frames(z: Optional[np.ndarray], L: int, B: int, I: int, dt, name: str) -> np.ndarray:
    if z is None:
        return np.zeros((L, B, I), dt)
    z = np.asarray(z, dtype=dt)
    if z.shape != (L, B, I):
        raise ValueError(f"{name} must have shape {(L, B, I)}, got {z.shape}")
    return z


def _frame_keep(lens: np.ndarray, T: int, L_past: int, L_future: int, dt) -> np.ndarray:
    """(L_past + T + L_future, B, 1): 1 for the frames of x_ext that are part of the sequence.

    Frame m (relative to x[0]) of row b is dropped (treated as zero) when the row has
    ended before it: m >= lengths[b] inside the chunk, and every x_future frame when
    lengths[b] < T.  The x_past frames are always kept."""
    m = np.arange(-L_past, T + L_future)[:, None]                  # frame index relative to x[0]
    in_chunk = (m < T) & (m < lens[None, :])
    future_kept = (m >= T) & (lens[None, :] == T)
    return ((m < 0) | in_chunk | future_kept).astype(dt)[:, :, None]


def _unfold(x_ext: np.ndarray, T: int, K: int) -> np.ndarray:
    """X (T, B, K*I) with column block k = x_ext[n + k], i.e. x[n + k - L_past]."""
    I = x_ext.shape[2]
    X = np.empty((T, x_ext.shape[1], K * I), x_ext.dtype)
    for k in range(K):
        X[:, :, k * I:(k + 1) * I] = x_ext[k:k + T]
    return X


def _fold(dX: np.ndarray, I: int, K: int) -> np.ndarray:
    """The adjoint of `_unfold`: dE/dx_ext (T + K - 1, B, I)."""
    T, B, _ = dX.shape
    dext = np.zeros((T + K - 1, B, I), dX.dtype)
    for k in range(K):
        dext[k:k + T] += dX[:, :, k * I:(k + 1) * I]
    return dext


# ----------------------------------------------------------------------------------------------
# LSTM parameters under the paper's names
# ----------------------------------------------------------------------------------------------

def _gate_views(params: Params, gates: Sequence[str], names: Dict[str, str]) -> Dict[str, np.ndarray]:
    """params[key] (len(gates)*H, ...) cut into one row block per gate, named names[key] + gate
    (views, not copies)."""
    H = params["W_x"].shape[0] // len(gates)
    return {names[key] + g: params[key][j * H:(j + 1) * H]
            for key in names for j, g in enumerate(gates)}


def _peephole_kind(params: Params) -> Optional[str]:
    if "w_s" in params and "W_s" in params:
        raise ValueError("params has both diagonal ('w_s') and full ('W_s') peepholes")
    return "diagonal" if "w_s" in params else "full" if "W_s" in params else None


def split_lstm_params(params: Params) -> Dict[str, np.ndarray]:
    """Per-gate views of the fused LSTM storage under the paper's names.

    Returns W_xcu.. (H, K*I), W_vcu.. (H, R), b_cu.. (H,) for cu, cs, du, cr; with
    diagonal peepholes ("w_s") w_scu, w_scs, w_scr (H,); with full peepholes ("W_s")
    W_scu, W_scs, W_scr (H, H); with a projection W_qv (P, H).  Views, not copies:
    writing to them writes to `params`.
    """
    views = _gate_views(params, GATES, {"W_x": "W_x", "W_v": "W_v", "b": "b_"})
    if "w_s" in params:
        for i, g in enumerate(PEEPHOLE_GATES):
            views["w_s" + g] = params["w_s"][i]
    if "W_s" in params:
        for i, g in enumerate(PEEPHOLE_GATES):
            views["W_s" + g] = params["W_s"][i]
    if "W_qv" in params:
        views["W_qv"] = params["W_qv"]
    return views


def _peep(P: Dict[str, np.ndarray], kind: Optional[str], g: str, s: np.ndarray) -> np.ndarray:
    """The peephole term W_s{g} s of accumulation a_{g} (0 without peepholes)."""
    if kind == "diagonal":
        return P["w_s" + g] * s
    if kind == "full":
        return s @ P["W_s" + g].T
    return np.zeros_like(s)


def _peep_T(P: Dict[str, np.ndarray], kind: Optional[str], g: str, alpha: np.ndarray) -> np.ndarray:
    """W_s{g}^T alpha: what the peephole sends back to the state it saw."""
    if kind == "diagonal":
        return P["w_s" + g] * alpha
    if kind == "full":
        return alpha @ P["W_s" + g]
    return np.zeros_like(alpha)


def _peep_grad(G: Dict[str, np.ndarray], kind: Optional[str], g: str, alpha: np.ndarray,
               s: np.ndarray) -> None:
    """dE/dW_s{g} += alpha s^T (diagonal: sum of alpha * s)."""
    if kind == "diagonal":
        G["w_s" + g] += (alpha * s).sum(axis=0)
    elif kind == "full":
        G["W_s" + g] += alpha.T @ s


# ----------------------------------------------------------------------------------------------
# One layer-direction of the LSTM: Vanilla (paper section 5; docs/equations.md §2) and augmented
# (paper section 6; docs/equations.md §3)
# ----------------------------------------------------------------------------------------------

def lstm_forward(x: np.ndarray, params: Params, s0: Optional[np.ndarray] = None,
                 v0: Optional[np.ndarray] = None, *, coupled_gates: bool = False,
                 cell_clip: Optional[float] = None, accumulation_clip: Optional[float] = None,
                 context: Tuple[int, int] = (0, 0), x_past: Optional[np.ndarray] = None,
                 x_future: Optional[np.ndarray] = None, lengths: Optional[np.ndarray] = None,
                 reverse: bool = False, precision: Optional[str] = None,
                 gate_activation: Any = "sigmoid", cell_activation: Any = "tanh",
                 output_activation: Any = "tanh"
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The (augmented) LSTM over one window, one layer, one direction.

    x (T, B, I); s0 (B, H) = s[-1]; v0 (B, R) = the first recurrent feedback, v[-1]
    (q[-1] with a projection); None = zeros.  Options (docs/equations.md §3, §4):
      coupled_gates      g_cs = 1 - g_cu; the cs weights are unused.
      cell_clip=c        s[n] = clip(g_cs s[n-1] + g_cu u[n], -c, c) before the readout.
      accumulation_clip  every a_* (peephole terms included) clipped to [-c, c] before warping.
      context=(Lp, Lf)   accumulations use W_x X[n], X[n] = [x[n-Lp], ..., x[n+Lf]];
                         x_past (Lp, B, I), x_future (Lf, B, I) are the frames around the
                         chunk (None = zeros: the sequence starts / ends here).
      lengths (B,)       steps n >= lengths[b] are padding (zero output, frozen state).
      reverse            visit each row's valid part backwards.
      precision          None, or "bf16" / "int8" (inference, float32 x): W_x X[n], W_v y[n-1]
                         and W_qv v[n] in reduced precision (§7); params "W_x", "W_v",
                         "W_qv" then hold bf16 bits (uint16) or int8 with "W_x_scale" ...
      gate_activation    G_c of the three gates (2.5), default sigmoid;
      cell_activation    G_d of the data update u (2.6), default tanh;
      output_activation  G_d of the readout r = G_d(s) (2.8), default tanh
                         (each a name or (name, alpha[, beta]); see `warp`, §9).
    Returns (y_seq (T, B, R), s_T (B, H), y_T (B, R), cache); y = v, or q = W_qv v.
    """
    x = np.asarray(x)
    dt = x.dtype
    _reduced(precision, dt, params, REDUCED_LSTM)
    p = _cast(params, dt, REDUCED_LSTM if precision else ())
    P = split_lstm_params(p)
    peep = _peephole_kind(p)
    proj = "W_qv" in p
    T, B, I = x.shape
    H = p["W_x"].shape[0] // 4
    R = p["W_qv"].shape[0] if proj else H
    L_past, L_future = _context(context)
    K = L_past + 1 + L_future
    if p["W_x"].shape != (4 * H, K * I):
        raise ValueError(f"W_x must have shape {(4 * H, K * I)} (K = {K} frames of I = {I}), "
                         f"got {p['W_x'].shape}")
    if p["W_v"].shape != (4 * H, R):
        raise ValueError(f"W_v must have shape {(4 * H, R)}, got {p['W_v'].shape}")
    c_cell = None if cell_clip is None else float(cell_clip)
    c_acc = None if accumulation_clip is None else float(accumulation_clip)
    lens = _lengths(lengths, T, B)
    order = _visit_order(lens, T, bool(reverse))
    G_c, G_d, G_r = (activation(f) for f in (gate_activation, cell_activation, output_activation))

    # The unfolded input, in ORIGINAL time order (also for the reverse direction).
    keep = _frame_keep(lens, T, L_past, L_future, dt)
    x_ext = np.concatenate([_frames(x_past, L_past, B, I, dt, "x_past"), x,
                            _frames(x_future, L_future, B, I, dt, "x_future")]) * keep
    X = _unfold(x_ext, T, K)                                      # (T, B, K*I)

    # Signals by visit step k (k = n without lengths / reverse); index k + 1 after step k.
    s = np.empty((T + 1, B, H), dt)      # s[k + 1] = state after visit k (frozen on padding)
    y = np.empty((T + 1, B, R), dt)      # y[k + 1] = recurrent feedback after visit k
    v = np.zeros((T + 1, B, H), dt)      # v[k + 1] = the cell's v at visit k; v[0] = v0 if R == H
    s[0], y[0] = _state(s0, B, H, dt), _state(v0, B, R, dt)
    if not proj:
        v[0] = y[0]
    g_cu, g_cs, g_cr, u, r, s_pre = (np.empty((T, B, H), dt) for _ in range(6))
    a = {g: np.zeros((T, B, H), dt) for g in GATES}                # pre-clip accumulations
    y_seq = np.zeros((T, B, R), dt)

    for k in range(T):
        s_prev, y_prev = s[k], y[k]
        X_k = _gather(X, order[k])
        # W_x* X[n] + W_v* y[n-1] per gate (reduced precision: each product whole, §7)
        if precision is None:
            z = {g: X_k @ P["W_x" + g].T + y_prev @ P["W_v" + g].T for g in GATES}
        else:
            zx, zv = _product(X_k, p, "W_x", precision), _product(y_prev, p, "W_v", precision)
            z = {g: zx[:, i * H:(i + 1) * H] + zv[:, i * H:(i + 1) * H] for i, g in enumerate(GATES)}
        a_cu = z["cu"] + P["b_cu"] + _peep(P, peep, "cu", s_prev)
        a_du = z["du"] + P["b_du"]                                # (2.1), (2.3), (3.1)
        g_cu[k] = warp(G_c, _clip(a_cu, c_acc))                   # (2.5)
        if coupled_gates:
            g_cs[k] = 1 - g_cu[k]                                 # (3.9): forget = 1 - update
        else:
            a_cs = z["cs"] + P["b_cs"] + _peep(P, peep, "cs", s_prev)
            g_cs[k] = warp(G_c, _clip(a_cs, c_acc))
            a["cs"][k] = a_cs
        u[k] = warp(G_d, _clip(a_du, c_acc))                      # (2.6)
        s_pre[k] = g_cs[k] * s_prev + g_cu[k] * u[k]              # (2.7)
        s_n = _clip(s_pre[k], c_cell)                             # (3.11), before the readout
        # the readout peephole sees the new (clipped) state s[n]
        a_cr = z["cr"] + P["b_cr"] + _peep(P, peep, "cr", s_n)
        g_cr[k] = warp(G_c, _clip(a_cr, c_acc))
        r[k] = warp(G_r, s_n)
        v_n = g_cr[k] * r[k]                                      # (2.8), (2.9)
        y_n = _product(v_n, p, "W_qv", precision) if proj else v_n  # (3.5) q[n] = W_qv v[n]
        a["cu"][k], a["du"][k], a["cr"][k] = a_cu, a_du, a_cr

        m = _row_mask(order[k], dt) != 0                          # padding rows keep their state
        s[k + 1] = np.where(m, s_n, s_prev)                       # (a select, so Inf stays Inf)
        y[k + 1] = np.where(m, y_n, y_prev)
        v[k + 1] = np.where(m, v_n, v[k])
        _scatter(y_seq, order[k], y_n)

    cache = dict(x=x, params=p, s=s, v=v, y=y, g_cu=g_cu, g_cs=g_cs, g_cr=g_cr, u=u, r=r,
                 s_pre=s_pre, a=a, X=X, keep=keep, order=order, lengths=lens, H=H, R=R,
                 peephole=peep, projection=proj, coupled_gates=bool(coupled_gates),
                 cell_clip=c_cell, accumulation_clip=c_acc, context=(L_past, L_future),
                 precision=precision, activations=(G_c, G_d, G_r))
    return y_seq, s[T].copy(), y[T].copy(), cache


def lstm_backward(dv_seq: np.ndarray, ds_T: Optional[np.ndarray], dv_T: Optional[np.ndarray],
                  cache: dict) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Params]:
    """Back-propagation through time for `lstm_forward`.

    dv_seq (T, B, R) = dE/dy[n] from above (ignored at padding positions); ds_T (B, H),
    dv_T (B, R) = dE/d(final s), dE/d(final y) (None = zeros).  Returns (dx (T, B, I),
    ds0 (B, H), dy0 (B, R), grads) where grads has the same keys and shapes as params.
    With a context window it also stores cache["dx_past"] (L_past, B, I) and
    cache["dx_future"] (L_future, B, I), the gradients w.r.t. the frames around the chunk.
    """
    if cache.get("precision"):
        raise ValueError("reduced precision (precision=...) is for inference only: no backward")
    x, p, X, order = cache["x"], cache["params"], cache["X"], cache["order"]
    s, v, y = cache["s"], cache["v"], cache["y"]
    g_cu, g_cs, g_cr, u, r, s_pre, a = (cache[k] for k in ("g_cu", "g_cs", "g_cr", "u", "r",
                                                            "s_pre", "a"))
    peep, proj, coupled = cache["peephole"], cache["projection"], cache["coupled_gates"]
    c_cell, c_acc = cache["cell_clip"], cache["accumulation_clip"]
    G_c, G_d, G_r = cache["activations"]
    L_past, L_future = cache["context"]
    dt = x.dtype
    P = split_lstm_params(p)
    T, B, I = x.shape
    H, R = cache["H"], cache["R"]
    dv_seq = np.asarray(dv_seq, dtype=dt)

    grads = {k: np.zeros_like(w) for k, w in p.items()}
    G = split_lstm_params(grads)  # views: accumulating into G fills `grads`
    dX = np.zeros_like(X)
    f_chi = _state(dv_T, B, R, dt)  # dE/dy flowing into the last visit
    f_psi = _state(ds_T, B, H, dt)  # dE/ds flowing into the last visit

    for k in range(T - 1, -1, -1):
        m = _row_mask(order[k], dt)
        X_k = _gather(X, order[k])
        s_prev, s_n, y_prev, v_n = s[k], s[k + 1], y[k], v[k + 1]
        chi_q = (_gather(dv_seq, order[k]) + f_chi) * m             # (2.10)/(3.6) (0 on padding)
        if proj:
            chi = chi_q @ P["W_qv"]                                # (3.7) chi[n] = W_qv^T chi_q[n]
            G["W_qv"] += chi_q.T @ v_n
        else:
            chi = chi_q                                            # dE/dv[n]
        # G_c', G_d' at the (clipped) accumulations, G_d' of the readout at s[n]
        dG = {g: warp_grad(G_d if g == "du" else G_c, _clip(a[g][k], c_acc)) for g in GATES}
        rho = chi * g_cr[k]                                        # (2.11), (2.12) below
        alpha_cr = chi * r[k] * dG["cr"] * _clip_grad(a["cr"][k], c_acc)
        psi = rho * warp_grad(G_r, s_n) + _peep_T(P, peep, "cr", alpha_cr) + f_psi * m  # (2.13)
        psi = psi * _clip_grad(s_pre[k], c_cell)                   # (3.12) dE/d(pre-clip s[n])
        if coupled:                                                # s = (1 - g_cu) s_prev + g_cu u
            alpha_cs = np.zeros_like(psi)
            alpha_cu = psi * (u[k] - s_prev) * dG["cu"]            # (3.10)
        else:
            alpha_cs = psi * s_prev * dG["cs"] * _clip_grad(a["cs"][k], c_acc)
            alpha_cu = psi * u[k] * dG["cu"]                       # (2.14), (2.15)
        alpha_cu = alpha_cu * _clip_grad(a["cu"][k], c_acc)
        alpha_du = psi * g_cu[k] * dG["du"] * _clip_grad(a["du"][k], c_acc)   # (2.16), (3.14)
        alpha = dict(cu=alpha_cu, cs=alpha_cs, du=alpha_du, cr=alpha_cr)

        # (2.17), (2.18): what flows to the previous visit; padding rows pass theirs through
        f_chi = sum(alpha[g] @ P["W_v" + g] for g in GATES) + (1 - m) * f_chi
        f_psi = (g_cs[k] * psi + _peep_T(P, peep, "cu", alpha_cu) + _peep_T(P, peep, "cs", alpha_cs)
                 + (1 - m) * f_psi)
        _scatter(dX, order[k], sum(alpha[g] @ P["W_x" + g] for g in GATES))

        for g in GATES:
            G["W_x" + g] += alpha[g].T @ X_k
            G["W_v" + g] += alpha[g].T @ y_prev
            G["b_" + g] += alpha[g].sum(axis=0)
        _peep_grad(G, peep, "cu", alpha_cu, s_prev)
        _peep_grad(G, peep, "cs", alpha_cs, s_prev)
        _peep_grad(G, peep, "cr", alpha_cr, s_n)                   # the readout peephole saw s[n]

    dext = _fold(dX, I, L_past + 1 + L_future) * cache["keep"]
    cache["dx_past"] = dext[:L_past].copy()
    cache["dx_future"] = dext[L_past + T:].copy()
    dx = dext[L_past:L_past + T].copy()
    return dx, f_psi, f_chi, grads  # dE/ds[-1], dE/dy[-1]: what flows out of the first visit


# ----------------------------------------------------------------------------------------------
# Canonical RNN (paper sections 2-4, docs/equations.md §1)
# ----------------------------------------------------------------------------------------------

def rnn_forward(x: np.ndarray, params: Params, s0: Optional[np.ndarray] = None,
                r0: Optional[np.ndarray] = None, *, lengths: Optional[np.ndarray] = None,
                reverse: bool = False, precision: Optional[str] = None,
                activation: Any = "tanh", accumulation_clip: Optional[float] = None
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Canonical RNN over one window, one layer, one direction.

    s[n] = W_s s[n-1] + W_r r[n-1] + W_x x[n] + theta_s,  r[n] = G(clip(s[n], -c, c)); the
    W_s term only when "W_s" in params.  x (T, B, I); s0, r0 (B, H) = s[-1], r[-1] (None =
    zeros).  lengths / reverse as for `lstm_forward`; precision "bf16" / "int8": W_x x[n]
    and W_r r[n-1] in reduced precision (§7), W_s s[n-1] stays float32.  activation: G (a
    name or (name, alpha[, beta]), see `warp`), default tanh; accumulation_clip: c (None:
    no clip; the state s keeps the unclipped value), (1.9).
    Returns (r_seq (T, B, H), s_T (B, H), r_T (B, H), cache).
    """
    x = np.asarray(x)
    dt = x.dtype
    _reduced(precision, dt, params, REDUCED_RNN)
    p = _cast(params, dt, REDUCED_RNN if precision else ())
    T, B, _ = x.shape
    H = p["W_r"].shape[0]
    lens = _lengths(lengths, T, B)
    order = _visit_order(lens, T, bool(reverse))
    G = activation_(activation)
    c_acc = None if accumulation_clip is None else float(accumulation_clip)

    s = np.empty((T + 1, B, H), dt)  # s[k + 1] = state after visit k; s[0] = s[-1]
    r = np.empty((T + 1, B, H), dt)  # likewise for r
    s[0], r[0] = _state(s0, B, H, dt), _state(r0, B, H, dt)
    r_seq = np.zeros((T, B, H), dt)
    for k in range(T):
        s_n = (_product(r[k], p, "W_r", precision)                                  # (1.1)
               + _product(_gather(x, order[k]), p, "W_x", precision) + p["theta_s"])
        if "W_s" in p:
            s_n = s_n + s[k] @ p["W_s"].T
        r_n = warp(G, _clip(s_n, c_acc))                            # (1.2), (1.9)
        m = _row_mask(order[k], dt) != 0              # padding rows keep their state
        s[k + 1] = np.where(m, s_n, s[k])
        r[k + 1] = np.where(m, r_n, r[k])
        _scatter(r_seq, order[k], r_n)

    cache = dict(x=x, params=p, s=s, r=r, order=order, lengths=lens, H=H, R=H,
                 precision=precision, activation=G, accumulation_clip=c_acc)
    return r_seq, s[T].copy(), r[T].copy(), cache


def rnn_backward(dr_seq: np.ndarray, ds_T: Optional[np.ndarray], dr_T: Optional[np.ndarray],
                 cache: dict) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Params]:
    """Back-propagation through time for `rnn_forward`.

    dr_seq (T, B, H) = dE/dr[n] from above; ds_T, dr_T (B, H) = dE/d(final s), dE/d(final r)
    (None = zeros).  Returns (dx (T, B, I), ds0 (B, H), dr0 (B, H), grads) with grads keyed
    and shaped like params.
    """
    if cache.get("precision"):
        raise ValueError("reduced precision (precision=...) is for inference only: no backward")
    x, p, s, r, order = cache["x"], cache["params"], cache["s"], cache["r"], cache["order"]
    dt = x.dtype
    T, B, _ = x.shape
    H = s.shape[2]
    dr_seq = np.asarray(dr_seq, dtype=dt)
    feedback = "W_s" in p
    G, c_acc = cache["activation"], cache["accumulation_clip"]

    grads = {k: np.zeros_like(w) for k, w in p.items()}
    dx = np.zeros_like(x)
    f_chi = _state(dr_T, B, H, dt)  # W_r^T psi[n+1] (plus dE/dr_T at the last step)
    f_psi = _state(ds_T, B, H, dt)  # W_s^T psi[n+1] (plus dE/ds_T at the last step)

    for k in range(T - 1, -1, -1):
        m = _row_mask(order[k], dt)
        s_prev, r_prev, s_n = s[k], r[k], s[k + 1]
        chi = (_gather(dr_seq, order[k]) + f_chi) * m     # (1.3) dE/dr[n] (0 on padding)
        dG = warp_grad(G, _clip(s_n, c_acc)) * _clip_grad(s_n, c_acc)   # (1.10)
        psi = dG * chi + f_psi * m                         # (1.4)

        grads["W_r"] += psi.T @ r_prev
        grads["W_x"] += psi.T @ _gather(x, order[k])
        grads["theta_s"] += psi.sum(axis=0)
        if feedback:
            grads["W_s"] += psi.T @ s_prev
        _scatter(dx, order[k], psi @ p["W_x"])

        # padding rows pass their gradients through the frozen state
        f_chi = psi @ p["W_r"] + (1 - m) * f_chi
        f_psi = (psi @ p["W_s"] if feedback else np.zeros_like(psi)) + (1 - m) * f_psi

    return dx, f_psi, f_chi, grads  # dE/ds[-1] = W_s^T psi[0], dE/dr[-1] = W_r^T psi[0]


# ----------------------------------------------------------------------------------------------
# Gated recurrent unit (Cho et al. 2014; docs/equations.md §8)
# ----------------------------------------------------------------------------------------------

def split_gru_params(params: Params) -> Dict[str, np.ndarray]:
    """Per-gate views of the fused GRU parameters under the names of docs/equations.md §8:
    W_xr, W_xz, W_xn (H, I), W_hr, W_hz, W_hn (H, H), b_r, b_z, b_n (H,) and b_hn (H,) when
    present.  Views: writing into them writes into `params`."""
    out = _gate_views(params, GRU_GATES, {"W_x": "W_x", "W_h": "W_h", "b": "b_"})
    if "b_hn" in params:
        out["b_hn"] = params["b_hn"]
    return out


def gru_forward(x: np.ndarray, params: Params, h0: Optional[np.ndarray] = None, *,
                linear_before_reset: bool = True, lengths: Optional[np.ndarray] = None,
                reverse: bool = False, precision: Optional[str] = None,
                gate_activation: Any = "sigmoid", cell_activation: Any = "tanh",
                accumulation_clip: Optional[float] = None
                ) -> Tuple[np.ndarray, np.ndarray, dict]:
    """The GRU over one window, one layer, one direction.

    x (T, B, I); h0 (B, H) = h[-1] (None = zeros).  params: "W_x" (3H, I), "W_h" (3H, H),
    "b" (3H,), gates in the order (r, z, n), and "b_hn" (H,) exactly when
    linear_before_reset (then the reset gate multiplies W_hn h[n-1] + b_hn, as in torch and
    Keras' reset_after; otherwise it multiplies h[n-1] before W_hn, as in ONNX's default).
    lengths / reverse as for `lstm_forward`.  precision "bf16" / "int8" (inference, float32
    x; params "W_x", "W_h" as bf16 bits or int8 with "W_x_scale", "W_h_scale" (3H,)):
    W_x x[n] and W_h* h[n-1] in reduced precision (§7), each product whole; without
    linear_before_reset W_hn (g_r ⊙ h[n-1]) too, its activation rounded or quantised per
    row like the others.  gate_activation: f of g_r, g_z (default sigmoid),
    cell_activation: g of u (default tanh), each a name or (name, alpha[, beta]) (see
    `warp`, §9); accumulation_clip: c, every a_* clipped to [-c, c] before warping (None:
    no clip; ONNX's clip).
    Returns (h_seq (T, B, H), h_T (B, H), cache).
    """
    x = np.asarray(x)
    dt = x.dtype
    _reduced(precision, dt, params, REDUCED_GRU)
    p = _cast(params, dt, REDUCED_GRU if precision else ())
    T, B, I = x.shape
    H = p["W_h"].shape[1]
    lbr = bool(linear_before_reset)
    if p["W_x"].shape != (3 * H, I) or p["W_h"].shape != (3 * H, H) or p["b"].shape != (3 * H,):
        raise ValueError(f"W_x, W_h, b must have shapes {(3 * H, I)}, {(3 * H, H)}, {(3 * H,)}, got "
                         f"{p['W_x'].shape}, {p['W_h'].shape}, {p['b'].shape}")
    if ("b_hn" in p) != lbr:
        raise ValueError("params hold 'b_hn' exactly when linear_before_reset is True")
    P = split_gru_params(p)
    lens = _lengths(lengths, T, B)
    order = _visit_order(lens, T, bool(reverse))
    r_, z_, n_ = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)

    f_gate, g_cell = activation(gate_activation), activation(cell_activation)
    c_acc = None if accumulation_clip is None else float(accumulation_clip)

    h = np.empty((T + 1, B, H), dt)        # h[k + 1] = state after visit k (frozen on padding)
    h[0] = _state(h0, B, H, dt)
    g_r, g_z, u = (np.empty((T, B, H), dt) for _ in range(3))
    a = {n: np.empty((T, B, H), dt) for n in GRU_GATES}   # the accumulations a_r, a_z, a_n
    c = np.empty((T, B, H), dt)            # W_hn h[n-1] + b_hn, or g_r h[n-1] (what W_hn multiplies)
    h_seq = np.zeros((T, B, H), dt)

    for k in range(T):
        h_prev = h[k]
        x_k = _gather(x, order[k])
        if precision is None:
            zx, zh = x_k @ p["W_x"].T, h_prev @ p["W_h"].T          # (B, 3H) each
        else:                                   # reduced (§7): W_x* x[n], W_h* h[n-1] whole
            zx, zh = _product(x_k, p, "W_x", precision), _product(h_prev, p, "W_h", precision)
        # (the sums in the kernel's order, so that reduced precision rounds the same values)
        a["r"][k] = zx[:, r_] + (zh[:, r_] + P["b_r"])
        a["z"][k] = zx[:, z_] + (zh[:, z_] + P["b_z"])
        g_r[k] = warp(f_gate, _clip(a["r"][k], c_acc))                             # (8.1)
        g_z[k] = warp(f_gate, _clip(a["z"][k], c_acc))                             # (8.2)
        if lbr:
            c[k] = zh[:, n_] + P["b_hn"]
            a["n"][k] = zx[:, n_] + (P["b_n"] + g_r[k] * c[k])                     # (8.3)
        else:
            c[k] = g_r[k] * h_prev
            a["n"][k] = zx[:, n_] + (P["b_n"] + _product(c[k], p, "W_h", precision, n_))  # (8.4)
        u[k] = warp(g_cell, _clip(a["n"][k], c_acc))                               # (8.5)
        h_n = u[k] + g_z[k] * (h_prev - u[k])             # (8.6) (1 - z) u + z h[n-1]

        m = _row_mask(order[k], dt) != 0                          # padding rows keep their state
        h[k + 1] = np.where(m, h_n, h_prev)
        _scatter(h_seq, order[k], h_n)

    cache = dict(x=x, params=p, h=h, g_r=g_r, g_z=g_z, u=u, c=c, a=a, order=order, lengths=lens,
                 linear_before_reset=lbr, H=H, R=H, precision=precision,
                 activations=(f_gate, g_cell), accumulation_clip=c_acc)
    return h_seq, h[T].copy(), cache


def gru_backward(dh_seq: np.ndarray, dh_T: Optional[np.ndarray],
                 cache: dict) -> Tuple[np.ndarray, np.ndarray, Params]:
    """Back-propagation through time for `gru_forward`.

    dh_seq (T, B, H) = dE/dh[n] from above (ignored at padding positions); dh_T (B, H) =
    dE/d(final h) (None = zeros).  Returns (dx (T, B, I), dh0 (B, H), grads) with grads keyed
    and shaped like params.
    """
    if cache.get("precision"):
        raise ValueError("reduced precision (precision=...) is for inference only: no backward")
    x, p, h, order = cache["x"], cache["params"], cache["h"], cache["order"]
    g_r, g_z, u, c, a = cache["g_r"], cache["g_z"], cache["u"], cache["c"], cache["a"]
    lbr = cache["linear_before_reset"]
    (f_gate, g_cell), c_acc = cache["activations"], cache["accumulation_clip"]
    dt = x.dtype
    T, B, _ = x.shape
    H = cache["H"]
    P = split_gru_params(p)
    dh_seq = np.asarray(dh_seq, dtype=dt)

    grads = {k: np.zeros_like(w) for k, w in p.items()}
    G = split_gru_params(grads)  # views: accumulating into G fills `grads`
    dx = np.zeros_like(x)
    f_chi = _state(dh_T, B, H, dt)  # dE/dh flowing into the last visit

    for k in range(T - 1, -1, -1):
        m = _row_mask(order[k], dt)
        x_k, h_prev = _gather(x, order[k]), h[k]
        chi = (_gather(dh_seq, order[k]) + f_chi) * m                      # (8.7) (0 on padding)
        # the gates' derivatives f'(a_r), f'(a_z), g'(a_n) at the clipped accumulations,
        # zero where the clip acts (sigma' and tanh' by default; §9)
        dG = {n: warp_grad(g_cell if n == "n" else f_gate, _clip(a[n][k], c_acc))
              * _clip_grad(a[n][k], c_acc) for n in GRU_GATES}
        alpha_z = chi * (h_prev - u[k]) * dG["z"]                          # (8.8)
        alpha_n = chi * (1 - g_z[k]) * dG["n"]                             # (8.9)
        if lbr:
            gamma = alpha_n * g_r[k]                        # (8.10) dE/d(W_hn h[n-1] + b_hn)
            alpha_r = alpha_n * c[k] * dG["r"]                             # (8.11)
            f_rh = 0
        else:
            gamma = alpha_n                                 # what W_hn multiplies is g_r h[n-1]
            rho = alpha_n @ P["W_hn"]                                      # (8.13)
            alpha_r = rho * h_prev * dG["r"]                               # (8.14)
            f_rh = rho * g_r[k]
        # (8.12) / (8.15): what flows to the previous visit; padding rows pass theirs through
        f_chi = (chi * g_z[k] + alpha_r @ P["W_hr"] + alpha_z @ P["W_hz"] + f_rh
                 + (gamma @ P["W_hn"] if lbr else 0) + (1 - m) * f_chi)
        alpha = dict(r=alpha_r, z=alpha_z, n=alpha_n)
        _scatter(dx, order[k], sum(alpha[g] @ P["W_x" + g] for g in GRU_GATES))   # (8.17)

        for g in GRU_GATES:
            G["W_x" + g] += alpha[g].T @ x_k                                # (8.16)
            G["b_" + g] += alpha[g].sum(axis=0)
        G["W_hr"] += alpha_r.T @ h_prev
        G["W_hz"] += alpha_z.T @ h_prev
        G["W_hn"] += gamma.T @ (h_prev if lbr else c[k])
        if lbr:
            G["b_hn"] += gamma.sum(axis=0)

    return dx, f_chi, grads  # dE/dh[-1]: what flows out of the first visit


# ----------------------------------------------------------------------------------------------
# Stacked and bidirectional networks (docs/equations.md §4): plain compositions of the cells above
# ----------------------------------------------------------------------------------------------

def _stacked(z: Optional[np.ndarray], i: int) -> Optional[np.ndarray]:
    """Layer-direction i of an (L*D, B, .) state, or None."""
    return None if z is None else np.asarray(z)[i]


def _direction_options(options: dict, d: int, D: int) -> dict:
    """The cell options of direction d: an activation given as a list of D (one per
    direction, forward first) becomes direction d's."""
    out = dict(options)
    for k in ACTIVATION_OPTIONS:
        if k in out:
            out[k] = _acts.per_direction(out[k], D, k)[d]
    return out


def _network_forward(cell_forward, x, layers: Sequence[Params], s0, o0, bidirectional: bool,
                     lengths, dropout_masks, first_options: dict, options: dict):
    """Layer l, direction d (params layers[l*D + d], d = 1 reversed); the input of layer l > 0
    is [outputs of layer l-1, directions concatenated] * dropout_masks[l-1]."""
    x = np.asarray(x)
    D = 2 if bidirectional else 1
    if len(layers) == 0 or len(layers) % D:
        raise ValueError(f"layers must hold L*D = L*{D} parameter dicts, got {len(layers)}")
    L = len(layers) // D
    if dropout_masks is not None and len(dropout_masks) != L - 1:
        raise ValueError(f"dropout_masks must hold L - 1 = {L - 1} masks, got {len(dropout_masks)}")
    caches, s_T, o_T, inputs = [], [], [], []
    inp = x
    for l in range(L):
        if l > 0 and dropout_masks is not None:
            inp = inp * np.asarray(dropout_masks[l - 1], dtype=x.dtype)
        inputs.append(inp)
        outs = []
        for d in range(D):
            i = l * D + d
            opts = _direction_options(first_options if l == 0 else options, d, D)
            y_i, s_i, o_i, c_i = cell_forward(inp, layers[i], _stacked(s0, i), _stacked(o0, i),
                                              lengths=lengths, reverse=(d == 1), **opts)
            outs.append(y_i)
            s_T.append(s_i)
            o_T.append(o_i)
            caches.append(c_i)
        inp = np.concatenate(outs, axis=2)                       # forward direction first
    cache = dict(caches=caches, D=D, L=L, dropout_masks=dropout_masks, x=x)
    return inp, np.stack(s_T), np.stack(o_T), cache


def _network_backward(cell_backward, dy_seq, ds_T, do_T, cache):
    D, L, caches, masks = cache["D"], cache["L"], cache["caches"], cache["dropout_masks"]
    x = cache["x"]
    dt = x.dtype
    d_out = np.asarray(dy_seq, dtype=dt)                         # dE/d(output of layer l)
    ds0, do0, grads = [None] * (L * D), [None] * (L * D), [None] * (L * D)
    for l in range(L - 1, -1, -1):
        d_in = 0
        col = 0
        for d in range(D):
            i = l * D + d
            R = caches[i]["R"]
            dx_i, ds0[i], do0[i], grads[i] = cell_backward(
                d_out[:, :, col:col + R], _stacked(ds_T, i), _stacked(do_T, i), caches[i])
            col += R
            d_in = d_in + dx_i                                    # both directions read the input
        if l > 0 and masks is not None:
            d_in = d_in * np.asarray(masks[l - 1], dtype=dt)
        d_out = d_in
    if "dx_past" in caches[0]:
        cache["dx_past"] = sum(caches[d]["dx_past"] for d in range(D))
        cache["dx_future"] = sum(caches[d]["dx_future"] for d in range(D))
    return d_out, np.stack(ds0), np.stack(do0), grads


def lstm_network_forward(x: np.ndarray, layers: Sequence[Params], s0: Optional[np.ndarray] = None,
                         v0: Optional[np.ndarray] = None, *, bidirectional: bool = False,
                         lengths: Optional[np.ndarray] = None,
                         dropout_masks: Optional[Sequence[np.ndarray]] = None,
                         x_past: Optional[np.ndarray] = None, x_future: Optional[np.ndarray] = None,
                         **cell_options) -> Tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """A stacked (and optionally bidirectional) LSTM as a composition of `lstm_forward`.

    layers[l*D + d]: the parameters of layer l, direction d (D = 2 if bidirectional, d = 1
    runs reversed).  s0 (L*D, B, H), v0 (L*D, B, R) (None = zeros).  dropout_masks[l-1]
    (T, B, D*R), already scaled, multiplies the input of layer l > 0.  cell_options
    (coupled_gates, cell_clip, accumulation_clip, context, precision, gate_activation,
    cell_activation, output_activation) go to every cell, except that context (and
    x_past / x_future, unidirectional only) applies to layer 0 only; an activation may
    be a list of D, one per direction.
    Returns (y (T, B, D*R), s_T (L*D, B, H), y_T (L*D, B, R), cache).
    """
    unknown = set(cell_options) - set(LSTM_CELL_OPTIONS)
    if unknown:
        raise TypeError(f"unknown LSTM cell options {sorted(unknown)}")
    if bidirectional and (x_past is not None or x_future is not None):
        raise ValueError("x_past / x_future (streaming context) need a unidirectional network")
    options = {k: w for k, w in cell_options.items() if k != "context"}
    first = dict(cell_options, x_past=x_past, x_future=x_future)
    return _network_forward(lstm_forward, x, layers, s0, v0, bidirectional, lengths,
                            dropout_masks, first, options)


def lstm_network_backward(dy_seq: np.ndarray, ds_T: Optional[np.ndarray], dy_T: Optional[np.ndarray],
                          cache: dict) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[Params]]:
    """Back-propagation for `lstm_network_forward`: dy_seq (T, B, D*R), ds_T (L*D, B, H),
    dy_T (L*D, B, R) (None = zeros).  Returns (dx (T, B, I), ds0 (L*D, B, H),
    dy0 (L*D, B, R), grads (a list like layers)); stores cache["dx_past"], cache["dx_future"]
    (the gradients w.r.t. layer 0's context frames, summed over directions)."""
    return _network_backward(lstm_backward, dy_seq, ds_T, dy_T, cache)


def rnn_network_forward(x: np.ndarray, layers: Sequence[Params], s0: Optional[np.ndarray] = None,
                        r0: Optional[np.ndarray] = None, *, bidirectional: bool = False,
                        lengths: Optional[np.ndarray] = None,
                        dropout_masks: Optional[Sequence[np.ndarray]] = None,
                        precision: Optional[str] = None, **cell_options
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """A stacked (and optionally bidirectional) canonical RNN as a composition of
    `rnn_forward`; layout as `lstm_network_forward` (R = H).  Each cell has the state
    feedback iff its params hold "W_s"; precision and cell_options (activation,
    accumulation_clip) go to every cell; activation may be a list of D, one per direction.
    Returns (r (T, B, D*H), s_T (L*D, B, H), r_T (L*D, B, H), cache)."""
    unknown = set(cell_options) - set(RNN_CELL_OPTIONS)
    if unknown:
        raise TypeError(f"unknown RNN cell options {sorted(unknown)}")
    opts = dict(cell_options, precision=precision)
    return _network_forward(rnn_forward, x, layers, s0, r0, bidirectional, lengths,
                            dropout_masks, opts, opts)


def rnn_network_backward(dr_seq: np.ndarray, ds_T: Optional[np.ndarray], dr_T: Optional[np.ndarray],
                         cache: dict) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[Params]]:
    """Back-propagation for `rnn_network_forward`: returns (dx (T, B, I), ds0 (L*D, B, H),
    dr0 (L*D, B, H), grads (a list like layers))."""
    return _network_backward(rnn_backward, dr_seq, ds_T, dr_T, cache)


def _gru_cell_forward(x, params, h0, _unused, *, lengths, reverse, **options):
    """`gru_forward` in the (y, state, output, cache) form the network composition takes."""
    h_seq, h_T, cache = gru_forward(x, params, h0, lengths=lengths, reverse=reverse, **options)
    return h_seq, h_T, h_T, cache


def _gru_cell_backward(dh_seq, dh_T, _unused, cache):
    dx, dh0, grads = gru_backward(dh_seq, dh_T, cache)
    return dx, dh0, dh0, grads


def gru_network_forward(x: np.ndarray, layers: Sequence[Params], h0: Optional[np.ndarray] = None,
                        *, linear_before_reset: bool = True, bidirectional: bool = False,
                        lengths: Optional[np.ndarray] = None,
                        dropout_masks: Optional[Sequence[np.ndarray]] = None,
                        precision: Optional[str] = None, **cell_options
                        ) -> Tuple[np.ndarray, np.ndarray, dict]:
    """A stacked (and optionally bidirectional) GRU as a composition of `gru_forward`;
    layout as `lstm_network_forward` (R = H), h0 (L*D, B, H) (None = zeros); precision
    and cell_options (gate_activation, cell_activation, accumulation_clip) go to every
    cell; an activation may be a list of D, one per direction.
    Returns (h (T, B, D*H), h_T (L*D, B, H), cache)."""
    unknown = set(cell_options) - set(GRU_CELL_OPTIONS)
    if unknown:
        raise TypeError(f"unknown GRU cell options {sorted(unknown)}")
    opts = dict(cell_options, linear_before_reset=linear_before_reset, precision=precision)
    y, h_T, _, cache = _network_forward(_gru_cell_forward, x, layers, h0, None, bidirectional,
                                        lengths, dropout_masks, opts, opts)
    return y, h_T, cache


def gru_network_backward(dh_seq: np.ndarray, dh_T: Optional[np.ndarray],
                         cache: dict) -> Tuple[np.ndarray, np.ndarray, List[Params]]:
    """Back-propagation for `gru_network_forward`: dh_seq (T, B, D*H), dh_T (L*D, B, H)
    (None = zeros).  Returns (dx (T, B, I), dh0 (L*D, B, H), grads (a list like layers))."""
    dx, dh0, _, grads = _network_backward(_gru_cell_backward, dh_seq, dh_T, None, cache)
    return dx, dh0, grads


# ---- Reduced precision for inference (docs/equations.md §7) ---------------------------
# The products of a weight matrix W (N, K) (rows = output units, as stored) with the
# activations A (M, K) that feed it, C = A @ W.T, in bfloat16 or int8. Everything else of a
# forward pass stays float32.

def bf16_bits(x: np.ndarray) -> np.ndarray:
    """The bfloat16 bit patterns (uint16) of float32 x: round to nearest, ties to even;
    magnitudes below 2^-126 (float32 denormals) become a signed zero; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    mag = u & np.uint32(0x7FFFFFFF)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    bits = np.where(mag > 0x7F800000, (u >> np.uint32(16)) | np.uint32(0x0040), rounded)
    bits = np.where(mag < 0x00800000, (u >> np.uint32(16)) & np.uint32(0x8000), bits)
    return bits.astype(np.uint16)


def bf16_value(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def bf16_round(x: np.ndarray) -> np.ndarray:
    """x rounded to bfloat16, as float32 values (`bf16_bits`)."""
    return bf16_value(bf16_bits(x))


def quantize_int8(X: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 quantisation of X (rows, K) in float32 arithmetic:
    amax = max_k |X[r, k]|, scale[r] = amax / 127, q = rint(clip(X * (127 / amax), -127, 127)).
    A row with amax < 2^-120 gets scale 0 and q = 0; a row with a NaN or inf gets scale NaN
    and q = 0.  Returns (q (rows, K) int8, scale (rows,) float32); X ~ q * scale[:, None]."""
    X = np.asarray(X, dtype=np.float32)
    rows, K = X.shape
    q = np.zeros((rows, K), np.int8)
    scale = np.zeros(rows, np.float32)
    for r in range(rows):
        x = X[r]
        if not np.all(np.isfinite(x)):
            scale[r] = np.nan
            continue
        amax = np.max(np.abs(x)) if K else np.float32(0)
        if amax < np.float32(2.0 ** -120):
            continue
        scale[r] = amax / np.float32(127)
        inv = np.float32(127) / amax
        q[r] = np.rint(np.clip(x * inv, np.float32(-127), np.float32(127))).astype(np.int8)
    return q, scale


def matmul_bf16(A: np.ndarray, W_bits: np.ndarray, pairs: bool = False) -> np.ndarray:
    """C (M, N) = A (M, K) @ W.T in bfloat16: W (N, K) given as bf16 bits, A rounded to
    bf16 (`bf16_bits`), the exact products added one at a time in float32, in k order
    (k = 0, 1, ...: fusedrnn's kernels that widen bf16 to float32), or with pairs=True pair
    by pair, k = 2j + 1 before k = 2j (its vdpbf16ps kernel, as the instruction is defined).
    Either is within `matmul_bf16_bound` of the exact sums."""
    a = bf16_round(np.asarray(A, dtype=np.float32))
    w = bf16_value(W_bits)
    K = a.shape[1]
    C = np.zeros((a.shape[0], w.shape[0]), np.float32)
    order = range(K)
    if pairs:                                    # 1, 0, 3, 2, ...; a last odd k alone
        order = [k ^ 1 for k in range(K + K % 2) if k ^ 1 < K]
    for k in order:
        C = C + a[:, k:k + 1] * w[:, k]          # the product is exact in float32
    return C


def matmul_bf16_bound(A: np.ndarray, W_bits: np.ndarray) -> np.ndarray:
    """(M, N): (K + 1) 2^-24 sum_k |a_k w_k| over the bf16 operands, a bound on the float32
    rounding of the sums in any order (the exact sums are `matmul_bf16_exact`)."""
    a = bf16_round(np.asarray(A, dtype=np.float32)).astype(np.float64)
    w = bf16_value(W_bits).astype(np.float64)
    return (a.shape[1] + 1) * 2.0 ** -24 * (np.abs(a) @ np.abs(w).T)


def matmul_bf16_exact(A: np.ndarray, W_bits: np.ndarray) -> np.ndarray:
    """(M, N) float64: the sums of the bf16 products without rounding (to float64's)."""
    a = bf16_round(np.asarray(A, dtype=np.float32)).astype(np.float64)
    return a @ bf16_value(W_bits).astype(np.float64).T


def matmul_int8(A: np.ndarray, W_q: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
    """C (M, N) = A (M, K) @ W.T in int8: W (N, K) quantised once (`quantize_int8`: W_q,
    w_scale (N,)), A quantised per row at every product (a_q, a_scale), the integer products
    summed exactly, then C = float32(acc) * (a_scale[m] * w_scale[n]) in float32."""
    a_q, a_scale = quantize_int8(A)
    acc = a_q.astype(np.int64) @ np.asarray(W_q, dtype=np.int64).T    # exact integer sums
    s = a_scale[:, None] * np.asarray(w_scale, dtype=np.float32)[None, :]
    return acc.astype(np.float32) * s

