"""Plain-torch reference implementations (slow, obviously correct) used by the tests for what
torch itself does not cover, e.g. dropout with known masks."""

from .rnn import rnn_stack

__all__ = ["rnn_stack"]
