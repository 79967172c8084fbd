"""``fastrnn.convert(model)``: swap torch's recurrent modules for fastrnn's, in place."""

from __future__ import annotations

from torch import nn

from . import modules

__all__ = ["convert"]

_REPLACEMENTS = {
    nn.RNN: modules.RNN,
    nn.LSTM: modules.LSTM,
    nn.GRU: modules.GRU,
    nn.RNNCell: modules.RNNCell,
    nn.LSTMCell: modules.LSTMCell,
    nn.GRUCell: modules.GRUCell,
}


def convert(model: nn.Module) -> nn.Module:
    """Replaces every ``nn.RNN/LSTM/GRU/RNNCell/LSTMCell/GRUCell`` in ``model`` (the model itself
    included) by its fastrnn class and returns ``model``.

    The swap changes each module's class in place: the fastrnn classes add no state, so the
    parameters, buffers, hooks and their identities are kept and an optimizer built before the
    call keeps working. Subclasses of the torch modules are left alone (they may override
    ``forward``), and so are modules that already are fastrnn's.
    """
    for module in model.modules():
        replacement = _REPLACEMENTS.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
    return model
