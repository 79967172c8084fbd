"""fastrnn: fast, deterministic RNN/LSTM/GRU and CTC kernels for PyTorch.

``fastrnn.LSTM`` and friends are drop-ins for ``torch.nn.LSTM`` and friends (subclasses that
override ``forward`` only); ``fastrnn.convert(model)`` swaps them into an existing model.
``fastrnn.CTCLoss`` / ``fastrnn.ctc_loss`` are drop-ins for ``nn.CTCLoss`` / ``F.ctc_loss``.
"""

from . import functional
from ._backend import cuda_build_available
from ._compile import install_dynamo_support
from .convert import convert
from .ctc import CTCLoss, ctc_loss, ctc_loss_from_logits
from .decode import ctc_beam_search, ctc_greedy_decode
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__version__ = "0.1.0"

install_dynamo_support()

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "convert", "CTCLoss",
           "ctc_loss", "ctc_loss_from_logits", "ctc_greedy_decode", "ctc_beam_search",
           "functional", "cuda_build_available", "__version__"]
