"""fastrnn: fast, deterministic RNN/LSTM/GRU kernels for PyTorch.

``fastrnn.LSTM`` and friends are drop-ins for ``torch.nn.LSTM`` and friends (subclasses that
override ``forward`` only); ``fastrnn.convert(model)`` swaps them into an existing model.
"""

from ._backend import cuda_build_available
from .convert import convert
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "convert",
           "cuda_build_available", "__version__"]
