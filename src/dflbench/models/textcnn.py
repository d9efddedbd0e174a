"""TextCNN (Kim 2014): embedding -> parallel 1-D convolutions (widths 3, 4, 5) -> ReLU -> max over time
-> concatenation -> dropout -> fc.

Input: token ids [B, L] (int64, L >= the widest kernel); padding id 0 embeds to a zero vector.
"""

from __future__ import annotations

import torch
from torch import nn

from dflbench.errors import UserError

from .registry import register_model


class TextCNN(nn.Module):
    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int = 128, num_filters: int = 100,
                 kernel_sizes: tuple[int, ...] = (3, 4, 5), dropout: float = 0.5, padding_idx: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, num_filters, k) for k in kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_filters * len(kernel_sizes), num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        e = self.embedding(tokens).transpose(1, 2)  # [B, E, L]
        pooled = [torch.relu(conv(e)).amax(dim=2) for conv in self.convs]
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))


@register_model("textcnn")
def textcnn(num_classes: int, in_channels: int | None, image_size: int | None, vocab_size: int | None = None,
            embed_dim: int = 128, num_filters: int = 100, kernel_sizes: tuple[int, ...] = (3, 4, 5),
            dropout: float = 0.5, padding_idx: int = 0) -> TextCNN:
    if in_channels is not None or image_size is not None:
        raise UserError("textcnn is a text model: pass vocab_size, not in_channels/image_size")
    if vocab_size is None or vocab_size < 2:
        raise UserError(f"textcnn needs vocab_size >= 2 (the vocabulary built from the training split), "
                        f"got {vocab_size}")
    if not kernel_sizes or min(kernel_sizes) < 1:
        raise UserError(f"textcnn: kernel_sizes must be positive widths, got {kernel_sizes}")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"textcnn: dropout must be in [0, 1), got {dropout}")
    return TextCNN(num_classes, vocab_size, embed_dim, num_filters, tuple(kernel_sizes), dropout, padding_idx)
