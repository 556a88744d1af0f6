"""fusedrnn: the canonical RNN and the (Vanilla) LSTM of A. Sherstinsky,
"Fundamentals of Recurrent Neural Network (RNN) and Long Short-Term Memory
(LSTM) Network" (Physica D, 2020), as fused CPU kernels with a NumPy API.

    import numpy as np, fusedrnn as fr
    lstm = fr.LSTM(input_size=32, hidden_size=64, dtype=np.float32, seed=0)
    y, state = lstm.forward(x)            # x (T, B, 32) -> y (T, B, 64)
    dx, dstate = lstm.backward(dy)        # gradients accumulate into lstm.grads

`fusedrnn.reference` is the plain NumPy oracle of the same equations.
"""
from ._kernel import get_gemm, set_gemm
from ._threads import get_num_threads, set_num_threads
from .lstm import LSTM, LSTMState
from .rnn import RNN, RNNState
from . import reference

__version__ = "0.1.0"

__all__ = ["LSTM", "LSTMState", "RNN", "RNNState", "reference", "get_gemm", "set_gemm",
           "get_num_threads", "set_num_threads", "__version__"]
