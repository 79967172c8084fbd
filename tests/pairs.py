"""Helpers shared by the test files: a torch module and its fastrnn twin with the same weights,
and their results as flat tuples of tensors. (Imported as a plain module: pytest puts tests/
on sys.path.)"""

import torch
import torch.nn as nn

import fastrnn

# The cell kinds the path tests cover: (torch class, constructor arguments).
CELLS = {
    "rnn_tanh": (nn.RNNCell, dict(nonlinearity="tanh")),
    "rnn_relu_nobias": (nn.RNNCell, dict(nonlinearity="relu", bias=False)),
    "lstm": (nn.LSTMCell, {}),
    "gru": (nn.GRUCell, {}),
}


def fr_class(torch_cls):
    """The fastrnn class standing in for a torch class (looked up by name)."""
    return getattr(fastrnn, torch_cls.__name__)


def make_pair(torch_cls, *args, **kwargs):
    """torch module and fastrnn module with the same args; fastrnn's weights loaded from torch's."""
    ref = torch_cls(*args, **kwargs)
    mod = fr_class(torch_cls)(*args, **kwargs)
    mod.load_state_dict(ref.state_dict())
    return ref, mod


def flat_tensors(result):
    """A module's or cell's result (or a state: a tensor, or LSTM's pair) as a flat tuple of
    tensors."""
    if isinstance(result, torch.Tensor):
        return (result,)
    return tuple(t for part in result for t in flat_tensors(part))
