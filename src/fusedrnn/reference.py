"""Plain NumPy oracle of the canonical RNN and the Vanilla LSTM (Sherstinsky 2020).

This module is the readable reference that the fused C kernel is tested against.
It is written to be obviously right, never fast: one Python loop over time,
forward for n = 0..T-1 and backward for n = T-1..0, using the signal names of
the paper (and of /spec/equations.md sections 1 and 2), so the code can be read
line by line next to the equations.

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

  LSTM: "W_x" (4H, I) = [W_xcu; W_xcs; W_xdu; W_xcr], "W_v" (4H, H) likewise,
        "b" (4H,) = [b_cu; b_cs; b_du; b_cr], and, only with diagonal peepholes,
        "w_s" (3, H) = [w_scu; w_scs; w_scr].  Gate order (cu, cs, du, cr) is
        PyTorch's (i, f, g, o).  Peepholes are on iff "w_s" is in the dict.
  RNN:  "W_x" (H, I), "W_r" (H, H), "theta_s" (H,), and "W_s" (H, H) only when
        the linear state feedback is on.

* Gradients of the final state enter at the last step: the backward loop starts
  from f_chi[T] = dE/dv_T (dE/dr_T for the RNN) and f_psi[T] = dE/ds_T, where
  f_chi, f_psi are what flows into step n from step n+1.  ``None`` means zero.
* The LSTM readout-gate peephole sees the NEW state s[n]; the update and state
  gate peepholes see s[n-1].  G_c = sigmoid, G_d = tanh, G = tanh.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

Params = Dict[str, np.ndarray]
GATES = ("cu", "cs", "du", "cr")  # control update, control state, data update, control readout
PEEPHOLE_GATES = ("cu", "cs", "cr")


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """Logistic sigmoid, written via tanh so it never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _cast(params: Params, dtype) -> Params:
    """Copies of the parameters in `dtype` (so later in-place updates do not affect the cache)."""
    return {k: np.array(v, dtype=dtype) for k, v in params.items()}


def _state(z: Optional[np.ndarray], B: int, H: int, dtype) -> np.ndarray:
    """An initial state or a final-state gradient: (B, H) in `dtype`; None -> zeros."""
    return np.zeros((B, H), dtype) if z is None else np.asarray(z, dtype=dtype).reshape(B, H)


def split_lstm_params(params: Params) -> Dict[str, np.ndarray]:
    """Per-gate views of the fused LSTM storage under the paper's names.

    Returns W_xcu.. (H, I), W_vcu.. (H, H), b_cu.. (H,) for cu, cs, du, cr and, when
    "w_s" is present, w_scu, w_scs, w_scr (H,).  Views, not copies: writing to them
    writes to `params`.
    """
    H = params["W_v"].shape[1]
    views = {}
    for i, g in enumerate(GATES):
        rows = slice(i * H, (i + 1) * H)
        views["W_x" + g] = params["W_x"][rows]
        views["W_v" + g] = params["W_v"][rows]
        views["b_" + g] = params["b"][rows]
    if "w_s" in params:
        for i, g in enumerate(PEEPHOLE_GATES):
            views["w_s" + g] = params["w_s"][i]
    return views


# ----------------------------------------------------------------------------------------------
# Vanilla LSTM (paper section 5, spec section 2)
# ----------------------------------------------------------------------------------------------

def lstm_forward(x: np.ndarray, params: Params, s0: Optional[np.ndarray], v0: Optional[np.ndarray]
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Vanilla LSTM over one window.

    x (T, B, I); s0, v0 (B, H) = s[-1], v[-1] (None = zeros).  Peepholes are on iff
    "w_s" in params.  Returns (v_seq (T, B, H), s_T (B, H), v_T (B, H), cache).
    """
    x = np.asarray(x)
    dt = x.dtype
    p = _cast(params, dt)
    P = split_lstm_params(p)
    peep = "w_s" in p
    T, B, _ = x.shape
    H = p["W_v"].shape[1]

    s = np.empty((T + 1, B, H), dt)  # s[n + 1] holds the paper's s[n]; s[0] = s[-1]
    v = np.empty((T + 1, B, H), dt)  # likewise for v
    s[0], v[0] = _state(s0, B, H, dt), _state(v0, B, H, dt)
    g_cu, g_cs, g_cr, u, r = (np.empty((T, B, H), dt) for _ in range(5))

    for n in range(T):
        s_prev, v_prev = s[n], v[n]
        a_cu = x[n] @ P["W_xcu"].T + v_prev @ P["W_vcu"].T + P["b_cu"]
        a_cs = x[n] @ P["W_xcs"].T + v_prev @ P["W_vcs"].T + P["b_cs"]
        a_du = x[n] @ P["W_xdu"].T + v_prev @ P["W_vdu"].T + P["b_du"]
        a_cr = x[n] @ P["W_xcr"].T + v_prev @ P["W_vcr"].T + P["b_cr"]
        if peep:
            a_cu = a_cu + P["w_scu"] * s_prev
            a_cs = a_cs + P["w_scs"] * s_prev
        g_cu[n] = _sigmoid(a_cu)
        g_cs[n] = _sigmoid(a_cs)
        u[n] = np.tanh(a_du)
        s[n + 1] = g_cs[n] * s_prev + g_cu[n] * u[n]
        if peep:
            a_cr = a_cr + P["w_scr"] * s[n + 1]  # the readout peephole sees the new state s[n]
        g_cr[n] = _sigmoid(a_cr)
        r[n] = np.tanh(s[n + 1])
        v[n + 1] = g_cr[n] * r[n]

    cache = dict(x=x, params=p, s=s, v=v, g_cu=g_cu, g_cs=g_cs, g_cr=g_cr, u=u, r=r)
    return v[1:].copy(), s[T].copy(), v[T].copy(), cache


def lstm_backward(dv_seq: np.ndarray, ds_T: Optional[np.ndarray], dv_T: Optional[np.ndarray],
                  cache: dict) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Params]:
    """Back-propagation through time for `lstm_forward`.

    dv_seq (T, B, H) = dE/dv[n] from above; ds_T, dv_T (B, H) = dE/d(final s), dE/d(final v)
    (None = zeros).  Returns (dx (T, B, I), ds0 (B, H), dv0 (B, H), grads) where grads has
    the same keys and shapes as params.
    """
    x, p = cache["x"], cache["params"]
    s, v, g_cu, g_cs, g_cr, u, r = (cache[k] for k in ("s", "v", "g_cu", "g_cs", "g_cr", "u", "r"))
    dt = x.dtype
    P = split_lstm_params(p)
    peep = "w_s" in p
    T, B, _ = x.shape
    H = s.shape[2]
    dv_seq = np.asarray(dv_seq, dtype=dt)

    grads = {k: np.zeros_like(a) for k, a in p.items()}
    G = split_lstm_params(grads)  # views: accumulating into G fills `grads`
    dx = np.empty_like(x)
    f_chi = _state(dv_T, B, H, dt)  # f_chi[T]
    f_psi = _state(ds_T, B, H, dt)  # f_psi[T]

    for n in range(T - 1, -1, -1):
        s_prev, s_n, v_prev = s[n], s[n + 1], v[n]
        chi = dv_seq[n] + f_chi                                    # dE/dv[n]
        rho = chi * g_cr[n]                                        # dE/dr[n]
        alpha_cr = chi * r[n] * g_cr[n] * (1 - g_cr[n])
        psi = rho * (1 - r[n] ** 2) + f_psi                        # dE/ds[n]
        if peep:
            psi = psi + P["w_scr"] * alpha_cr
        alpha_cs = psi * s_prev * g_cs[n] * (1 - g_cs[n])
        alpha_cu = psi * u[n] * g_cu[n] * (1 - g_cu[n])
        alpha_du = psi * g_cu[n] * (1 - u[n] ** 2)
        alpha = dict(cu=alpha_cu, cs=alpha_cs, du=alpha_du, cr=alpha_cr)

        f_chi = sum(alpha[g] @ P["W_v" + g] for g in GATES)        # f_chi[n]
        f_psi = g_cs[n] * psi                                      # f_psi[n]
        if peep:
            f_psi = f_psi + P["w_scu"] * alpha_cu + P["w_scs"] * alpha_cs
        dx[n] = sum(alpha[g] @ P["W_x" + g] for g in GATES)

        for g in GATES:
            G["W_x" + g] += alpha[g].T @ x[n]
            G["W_v" + g] += alpha[g].T @ v_prev
            G["b_" + g] += alpha[g].sum(axis=0)
        if peep:
            G["w_scu"] += (alpha_cu * s_prev).sum(axis=0)
            G["w_scs"] += (alpha_cs * s_prev).sum(axis=0)
            G["w_scr"] += (alpha_cr * s_n).sum(axis=0)     # the readout peephole saw s[n]

    return dx, f_psi, f_chi, grads  # dE/ds[-1] = f_psi[0], dE/dv[-1] = f_chi[0]


# ----------------------------------------------------------------------------------------------
# Canonical RNN (paper sections 2-4, spec section 1)
# ----------------------------------------------------------------------------------------------

def rnn_forward(x: np.ndarray, params: Params, s0: Optional[np.ndarray], r0: Optional[np.ndarray]
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Canonical RNN over one window.

    s[n] = W_s s[n-1] + W_r r[n-1] + W_x x[n] + theta_s,  r[n] = tanh(s[n]); the W_s term
    only when "W_s" in params.  x (T, B, I); s0, r0 (B, H) = s[-1], r[-1] (None = zeros).
    Returns (r_seq (T, B, H), s_T (B, H), r_T (B, H), cache).
    """
    x = np.asarray(x)
    dt = x.dtype
    p = _cast(params, dt)
    T, B, _ = x.shape
    H = p["W_r"].shape[0]

    s = np.empty((T + 1, B, H), dt)  # s[n + 1] holds the paper's s[n]; s[0] = s[-1]
    r = np.empty((T + 1, B, H), dt)  # likewise for r
    s[0], r[0] = _state(s0, B, H, dt), _state(r0, B, H, dt)
    for n in range(T):
        s_n = r[n] @ p["W_r"].T + x[n] @ p["W_x"].T + p["theta_s"]
        if "W_s" in p:
            s_n = s_n + s[n] @ p["W_s"].T
        s[n + 1] = s_n
        r[n + 1] = np.tanh(s_n)

    cache = dict(x=x, params=p, s=s, r=r)
    return r[1:].copy(), s[T].copy(), r[T].copy(), cache


def rnn_backward(dr_seq: np.ndarray, ds_T: Optional[np.ndarray], dr_T: Optional[np.ndarray],
                 cache: dict) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Params]:
    """Back-propagation through time for `rnn_forward`.

    dr_seq (T, B, H) = dE/dr[n] from above; ds_T, dr_T (B, H) = dE/d(final s), dE/d(final r)
    (None = zeros).  Returns (dx (T, B, I), ds0 (B, H), dr0 (B, H), grads) with grads keyed
    and shaped like params.
    """
    x, p, s, r = cache["x"], cache["params"], cache["s"], cache["r"]
    dt = x.dtype
    T, B, _ = x.shape
    H = s.shape[2]
    dr_seq = np.asarray(dr_seq, dtype=dt)
    feedback = "W_s" in p

    grads = {k: np.zeros_like(a) for k, a in p.items()}
    dx = np.empty_like(x)
    f_chi = _state(dr_T, B, H, dt)  # W_r^T psi[n+1] (plus dE/dr_T at the last step)
    f_psi = _state(ds_T, B, H, dt)  # W_s^T psi[n+1] (plus dE/ds_T at the last step)

    for n in range(T - 1, -1, -1):
        s_prev, r_prev, r_n = s[n], r[n], r[n + 1]
        chi = dr_seq[n] + f_chi                    # dE/dr[n]
        psi = (1 - r_n ** 2) * chi + f_psi         # dE/ds[n], G'(s) = 1 - tanh(s)^2

        grads["W_r"] += psi.T @ r_prev
        grads["W_x"] += psi.T @ x[n]
        grads["theta_s"] += psi.sum(axis=0)
        if feedback:
            grads["W_s"] += psi.T @ s_prev
        dx[n] = psi @ p["W_x"]

        f_chi = psi @ p["W_r"]
        f_psi = psi @ p["W_s"] if feedback else np.zeros_like(psi)

    return dx, f_psi, f_chi, grads  # dE/ds[-1] = W_s^T psi[0], dE/dr[-1] = W_r^T psi[0]
