"""Lets ``torch.compile`` trace fastrnn's RNN/LSTM/GRU modules without a graph break, and
``torch.jit.script`` refuse them clearly (``refuse_torchscript``).

Dynamo refuses to trace any instance of ``nn.RNN``/``nn.GRU``/``nn.LSTM`` (an ``isinstance`` check
in ``VariableBuilder.wrap_module``, switched off only by the global
``torch._dynamo.config.allow_rnn``), because torch's own modules call fused ATen kernels it does not
handle well. fastrnn's modules are subclasses (so that ``isinstance(m, nn.LSTM)`` holds for users)
but their forward is plain Python around a ``torch.library`` custom op, which Dynamo traces whole.
So ``allow_rnn`` is turned on exactly while Dynamo wraps a fastrnn module and nowhere else: torch's
own modules keep torch's behaviour (a graph break), also next to fastrnn's in one compiled model.

``torch._dynamo`` takes about a second to import, so it is not imported here: the wrapper is
installed right after torch imports ``torch._dynamo.variables.builder`` (or now, if it already has).
When a future torch moves ``wrap_module``, nothing is patched and fastrnn's modules graph-break like
torch's (tests/test_ecosystem.py would fail, not users' runs). See docs/design-notes.md.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import sys

__all__ = ["install_dynamo_support", "refuse_torchscript"]


def refuse_torchscript(module) -> None:
    """fastrnn's modules as their ``__prepare_scriptable__``, which ``torch.jit.script`` calls on
    every module before compiling it: their forwards are Python around custom ops, not
    TorchScript, and the compiler's own error would point at whichever line it fails on first."""
    raise RuntimeError(
        f"fastrnn.{type(module).__name__} cannot be compiled by torch.jit.script (its forward is "
        "not TorchScript); torch.jit.trace, torch.export and torch.compile record its custom ops")

_BUILDER = "torch._dynamo.variables.builder"


def _patch_wrap_module(builder_module) -> None:
    from .modules import _FastRNNBase  # noqa: PLC0415 - modules imports this file's users

    cls = getattr(builder_module, "VariableBuilder", None)
    original = getattr(cls, "wrap_module", None)
    if original is None or getattr(original, "_fastrnn_allows_rnn", False):
        return
    config = importlib.import_module("torch._dynamo.config")

    @functools.wraps(original)
    def wrap_module(self, value):
        if isinstance(value, _FastRNNBase):
            with config.patch(allow_rnn=True):
                return original(self, value)
        return original(self, value)

    wrap_module._fastrnn_allows_rnn = True
    cls.wrap_module = wrap_module


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; when the builder module is imported, wraps its loader so that the
    patch runs right after the module's code."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _BUILDER:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _patch_wrap_module(module)

        spec.loader.exec_module = exec_module
        return spec


def install_dynamo_support() -> None:
    """Makes Dynamo accept fastrnn's RNN modules, now or as soon as Dynamo is imported."""
    if _BUILDER in sys.modules:
        _patch_wrap_module(sys.modules[_BUILDER])
    elif not any(isinstance(f, _PatchAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterImport())
