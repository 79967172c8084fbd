"""Helpers shared by the test files: a torch module and its fastrnn twin with the same weights.
(Imported as a plain module: pytest puts tests/ on sys.path.)"""

import fastrnn


def fr_class(torch_cls):
    """The fastrnn class standing in for a torch class (looked up by name)."""
    return getattr(fastrnn, torch_cls.__name__)


def make_pair(torch_cls, *args, **kwargs):
    """torch module and fastrnn module with the same args; fastrnn's weights loaded from torch's."""
    ref = torch_cls(*args, **kwargs)
    mod = fr_class(torch_cls)(*args, **kwargs)
    mod.load_state_dict(ref.state_dict())
    return ref, mod
