"""fusedrnn: the canonical RNN and the (Vanilla) LSTM of A. Sherstinsky,
"Fundamentals of Recurrent Neural Network (RNN) and Long Short-Term Memory
(LSTM) Network" (Physica D, 2020), and the GRU, as fused CPU kernels with a
NumPy API.

    import numpy as np, fusedrnn as fr
    lstm = fr.LSTM(input_size=32, hidden_size=64, dtype=np.float32, seed=0)
    y, state = lstm.forward(x)            # x (T, B, 32) -> y (T, B, 64)
    dx, dstate = lstm.backward(dy)        # gradients accumulate into lstm.grads

The equations, with the paper's names and numbers the code cites: docs/equations.md.
`fusedrnn.reference` is the plain NumPy oracle of the same equations.
"""
from ._kernel import get_gemm, set_gemm
from .core._threads import get_num_threads, set_num_threads
from .core.lstm import LSTM, LSTMState
from .core.rnn import RNN, RNNState
from .core.gru import GRU, GRUState
from . import reference

__version__ = "0.1.0"

__all__ = ["LSTM", "LSTMState", "RNN", "RNNState", "GRU", "GRUState", "reference", "get_gemm",
           "set_gemm", "get_num_threads", "set_num_threads", "__version__"]

# Training: read-out layer, losses, optimisers, Sequential, truncated BPTT, checkpoints.
from .core.linear import Linear
from .nn.losses import cross_entropy, mse_loss
from .core.sequential import Sequential
from .nn.optim import clip_grad_norm
from .nn import checkpoint, losses, optim, train
from .nn.checkpoint import load, load_checkpoint, save
from .core import quantized
from .core.quantized import QuantizedGRU, QuantizedLSTM, QuantizedRNN

import sys as _sys

# the training modules live in fusedrnn.nn; their paths fusedrnn.optim, .train, .losses and
# .checkpoint name the same module objects (so `import fusedrnn.optim` and pickles keep working)
for _name in ("checkpoint", "losses", "optim", "train"):
    _sys.modules[f"{__name__}.{_name}"] = _sys.modules[f"{__name__}.nn.{_name}"]
_sys.modules[f"{__name__}.quantized"] = quantized   # likewise fusedrnn.core.quantized

__all__ += ["Linear", "Sequential", "mse_loss", "cross_entropy", "clip_grad_norm", "optim",
            "train", "save", "load", "load_checkpoint", "quantized", "QuantizedLSTM",
            "QuantizedRNN", "QuantizedGRU"]

# Ecosystem: ONNX export/import, the version from the package metadata, and
# fusedrnn.torch (torch.nn.Modules) imported on first use of `fr.torch` only,
# so that `import fusedrnn` does not import torch.
from types import ModuleType as _ModuleType

from . import onnx
from ._version import version as _dist_version

__version__ = _dist_version()
__all__ += ["onnx"]


def __getattr__(name: str) -> "_ModuleType":  # PEP 562: fr.torch without importing torch up front
    if name == "torch":
        import importlib
        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
