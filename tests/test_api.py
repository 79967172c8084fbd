"""The public surface: what `import fastrnn` offers and how it relates to torch's."""

import torch
from torch import nn

import fastrnn


def test_public_names_are_exported():
    for name in fastrnn.__all__:
        assert hasattr(fastrnn, name), name


def test_modules_are_torch_subclasses():
    pairs = [(fastrnn.RNN, nn.RNN), (fastrnn.LSTM, nn.LSTM), (fastrnn.GRU, nn.GRU),
             (fastrnn.RNNCell, nn.RNNCell), (fastrnn.LSTMCell, nn.LSTMCell),
             (fastrnn.GRUCell, nn.GRUCell), (fastrnn.CTCLoss, nn.CTCLoss)]
    for ours, theirs in pairs:
        assert issubclass(ours, theirs)


def test_functional_ctc_loss_is_the_same_function_as_the_top_level_one():
    assert fastrnn.functional.ctc_loss is fastrnn.ctc_loss


def test_ctc_loss_module_matches_functional(assert_close):
    log_probs = torch.randn(12, 3, 6).log_softmax(-1)
    targets = torch.randint(1, 6, (3, 4))
    lengths = torch.tensor([12, 10, 7]), torch.tensor([4, 2, 3])
    assert_close(fastrnn.CTCLoss()(log_probs, targets, *lengths),
                 nn.functional.ctc_loss(log_probs, targets, *lengths))
