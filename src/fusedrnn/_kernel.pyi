"""Type stub of the Cython extension `fusedrnn._kernel` (bindings to csrc/).

Every array argument is a flat, C-contiguous float32 or float64 buffer (all of
one call in the same dtype). Cython's typed memoryviews accept None, and the
bindings treat None as an absent optional buffer (and refuse it, with
ValueError, where the kernel needs one), so every buffer is typed Optional."""
from typing import Any, Optional, Tuple

import numpy as np
import numpy.typing as npt

_Buf = Optional[npt.NDArray[Any]]
_OptBuf = Optional[npt.NDArray[Any]]
_Lengths = Optional[npt.NDArray[np.int64]]

def _load_scipy_blas() -> bool: ...
def set_gemm(backend: str) -> None: ...
def get_gemm() -> str: ...
def set_packed_max_rows(rows: int) -> int: ...
def set_num_threads(n: int) -> int: ...
def gemm(C: _Buf, A: _Buf, Bm: _Buf, tA: bool, tB: bool, M: int, N: int, K: int,
         alpha: float = ..., beta: float = ...) -> None: ...

class LSTMConfig:
    R: int
    def __init__(self, T: int, B: int, I: int, H: int, P: int = ..., peepholes: int = ...,
                 coupled_gates: bool = ..., reverse: bool = ..., cell_clip: float = ...,
                 accumulation_clip: float = ..., lengths: _Lengths = ...) -> None: ...
    def sizes(self) -> Tuple[int, int, int, int]: ...

def lstm_sizes(T: int, B: int, I: int, H: int, peepholes: int,
               P: int = ...) -> Tuple[int, int, int, int]: ...
def lstm_forward(c: LSTMConfig, y_seq: _Buf, s_T: _Buf, y_T: _Buf, acts: _OptBuf,
                 work: _OptBuf, x: _Buf, s0: _Buf, y0: _Buf, W_x: _Buf, W_v: _Buf, b: _Buf,
                 W_s: _OptBuf, W_qv: _OptBuf) -> None: ...
def lstm_backward(c: LSTMConfig, dx: _OptBuf, ds0: _OptBuf, dy0: _OptBuf, dW_x: _Buf,
                  dW_v: _Buf, db: _Buf, dW_s: _OptBuf, dW_qv: _OptBuf, work: _Buf,
                  dy_seq: _OptBuf, ds_T: _OptBuf, dy_T: _OptBuf, acts: _Buf, x: _Buf,
                  y_seq: _Buf, s0: _Buf, y0: _Buf, W_x: _Buf, W_v: _Buf, W_s: _OptBuf,
                  W_qv: _OptBuf) -> None: ...

class RNNConfig:
    def __init__(self, T: int, B: int, I: int, H: int, state_feedback: bool = ...,
                 reverse: bool = ..., lengths: _Lengths = ...) -> None: ...
    def sizes(self) -> Tuple[int, int, int, int]: ...

def rnn_sizes(T: int, B: int, I: int, H: int, state_feedback: int) -> Tuple[int, int, int, int]: ...
def rnn_forward(c: RNNConfig, r_seq: _Buf, s_T: _Buf, r_T: _Buf, acts: _OptBuf, work: _OptBuf,
                x: _Buf, s0: _Buf, r0: _Buf, W_x: _Buf, W_r: _Buf, theta_s: _Buf,
                W_s: _OptBuf) -> None: ...
def rnn_backward(c: RNNConfig, dx: _OptBuf, ds0: _OptBuf, dr0: _OptBuf, dW_x: _Buf, dW_r: _Buf,
                 dtheta_s: _Buf, dW_s: _OptBuf, work: _Buf, dr_seq: _OptBuf, ds_T: _OptBuf,
                 dr_T: _OptBuf, acts: _OptBuf, x: _Buf, r_seq: _Buf, s0: _Buf, r0: _Buf,
                 W_x: _Buf, W_r: _Buf, W_s: _OptBuf) -> None: ...
