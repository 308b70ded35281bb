"""``vit@1``, ``bert@1`` and ``gpt2@1``: pre-norm transformers built from :mod:`.layers`.

* ViT: input ``x`` [B, 3, image, image] float, output ``logits`` [B, num_classes].
* BERT-style encoder: input ``input_ids`` [B, T] int64 (optional ``attention_mask``
  [B, T], nonzero = attend), output ``hidden`` [B, T, dim].
* GPT-2-style decoder: input ``input_ids`` [B, T] int64, output ``logits`` [B, T, vocab].
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Block


class ViT(nn.Module):
    """Vision transformer: conv patch embedding, class token, learned positions."""

    def __init__(
        self, *, image: int, patch: int, dim: int, depth: int, heads: int, mlp: int, classes: int
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp, causal=False) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return {"logits": self.head(self.norm(x[:, 0]))}


class _TextTransformer(nn.Module):
    def __init__(
        self,
        *,
        vocab: int,
        positions: int,
        dim: int,
        depth: int,
        heads: int,
        mlp: int,
        causal: bool,
    ) -> None:
        super().__init__()
        self.tok_embed = nn.Embedding(vocab, dim)
        self.pos_embed = nn.Embedding(positions, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp, causal=causal) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def encode(self, ids: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok_embed(ids) + self.pos_embed(pos)[None]
        for block in self.blocks:
            x = block(x, pad_mask)
        return self.norm(x)  # type: ignore[no-any-return]


class BertEncoder(_TextTransformer):
    """Bidirectional encoder; returns the final hidden states."""

    def __init__(self, *, vocab: int, positions: int, dim: int, depth: int, heads: int, mlp: int):
        super().__init__(
            vocab=vocab,
            positions=positions,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp=mlp,
            causal=False,
        )

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        pad = None if attention_mask is None else attention_mask != 0
        return {"hidden": self.encode(input_ids, pad)}


class GPT2(_TextTransformer):
    """Causal decoder with an (untied) language-model head; returns logits for every position."""

    def __init__(self, *, vocab: int, positions: int, dim: int, depth: int, heads: int, mlp: int):
        super().__init__(
            vocab=vocab,
            positions=positions,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp=mlp,
            causal=True,
        )
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.lm_head(self.encode(input_ids, None))}
