"""Functional forms, mirroring ``torch.nn.functional`` for what fastrnn provides."""

from .ctc import ctc_loss, ctc_loss_from_logits

__all__ = ["ctc_loss", "ctc_loss_from_logits"]
