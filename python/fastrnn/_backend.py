"""Which native module runs a tensor's work: ``_C`` for CPU tensors, ``_cuda`` (imported lazily
on first use, so that ``import fastrnn`` never needs CUDA libraries) for CUDA tensors."""

from __future__ import annotations

import functools

import torch

from . import _C

__all__ = ["cuda_module", "cuda_build_available", "native_dtype", "compute_dtype"]

_NATIVE_DTYPES = {torch.float32: _C.DType.float32, torch.float64: _C.DType.float64}
# Half-precision tensors run through the float32 kernels on both devices (float32 accumulation
# and state; docs/design-notes.md).
_HALF_COMPUTE_DTYPES = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


@functools.lru_cache(maxsize=None)
def _import_cuda():
    try:
        from . import _cuda  # noqa: PLC0415 - lazy on purpose
    except ImportError as exc:
        return None, exc
    return _cuda, None


def cuda_build_available() -> bool:
    """True when this build of fastrnn contains the CUDA module."""
    return _import_cuda()[0] is not None


def cuda_module():
    """The ``fastrnn._cuda`` module, or a RuntimeError explaining why it is missing."""
    module, error = _import_cuda()
    if module is None:
        raise RuntimeError(
            "fastrnn was built without CUDA support (no CUDA compiler at build time, or "
            "FASTRNN_CUDA=OFF), so it cannot run on CUDA tensors. Rebuild from source on a "
            f"machine with nvcc: pip install --no-build-isolation . (import error: {error})"
        )
    return module


def native_dtype(dtype: torch.dtype, what: str):
    """The core's dtype tag for a CPU tensor dtype, or a TypeError naming what is supported."""
    try:
        return _NATIVE_DTYPES[dtype]
    except KeyError:
        raise TypeError(
            f"fastrnn: {what} on CPU supports float32 and float64 tensors, got {dtype}"
        ) from None


def compute_dtype(dtype: torch.dtype, device_type: str, what: str) -> torch.dtype:
    """The dtype the kernels run in for tensors of ``dtype`` on ``device_type``: the dtype itself
    for float32/float64, float32 for float16/bfloat16; a TypeError otherwise."""
    if dtype in _NATIVE_DTYPES:
        return dtype
    if dtype in _HALF_COMPUTE_DTYPES:
        return _HALF_COMPUTE_DTYPES[dtype]
    raise TypeError(f"fastrnn: {what} on {device_type.upper()} supports float32, float64, "
                    f"float16 and bfloat16 tensors, got {dtype}")
