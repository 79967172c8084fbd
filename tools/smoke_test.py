"""Smoke test of an installed fastrnn (a built wheel in a fresh environment, cibuildwheel's
test-command): an LSTM and the CTC loss against torch, forward and backward, on CPU.

    python tools/smoke_test.py        # prints "fastrnn <version> OK" or fails with a traceback

It imports fastrnn from wherever it is installed, so run it from outside the source tree (or
cibuildwheel's test directory) to test the wheel rather than the checkout.
"""

import torch
import torch.nn.functional as F
from torch import nn

import fastrnn


def check_lstm() -> None:
    ref = nn.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True)
    mod = fastrnn.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(3, 7, 6)
    results = []
    for module in (ref, mod):
        leaf = x.clone().requires_grad_()
        output, (h_n, c_n) = module(leaf)
        (output.sum() + h_n.sum() + c_n.sum()).backward()
        results.append([output, h_n, c_n, leaf.grad] + [p.grad for p in module.parameters()])
    for want, got in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def check_ctc() -> None:
    logits = torch.randn(20, 4, 6, dtype=torch.float64)
    targets = torch.randint(1, 6, (4, 5))
    lengths = torch.tensor([20, 18, 15, 12]), torch.tensor([5, 4, 3, 5])
    results = []
    for loss_fn in (F.ctc_loss, fastrnn.ctc_loss):
        leaf = logits.clone().requires_grad_()
        loss = loss_fn(leaf.log_softmax(2), targets, *lengths)
        loss.backward()
        results.append((loss, leaf.grad))
    for want, got in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


if __name__ == "__main__":
    torch.manual_seed(0)
    check_lstm()
    check_ctc()
    print(f"fastrnn {fastrnn.__version__} OK (CUDA module built: {fastrnn.cuda_build_available()})")
