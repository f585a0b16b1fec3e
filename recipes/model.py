"""A small byte-level decoder-only transformer language model, and its per-sample loss.

The model reads bytes (vocabulary 256) and predicts the next byte. It is the default model of
the main job: small enough to train a few hundred steps on a laptop CPU, big enough that the
domains of the built-in corpus are learned at visibly different speeds.

Example:
    >>> import torch
    >>> from recipes.model import ByteTransformerLM, per_sample_loss
    >>> model = ByteTransformerLM(d_model=32, n_layers=1, n_heads=2, seq_len=16)
    >>> tokens = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(0))
    >>> model(tokens).shape
    torch.Size([3, 16, 256])
    >>> per_sample_loss(model, tokens).shape  # one loss per sequence, for Reweighter.reduce
    torch.Size([3])
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ByteTransformerLM", "make_optimizer", "per_sample_loss", "warmup_cosine"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


class _Block(nn.Module):
    """Pre-norm transformer block: causal self-attention then a GELU MLP, both residual."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, d_ff)
        self.out = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=2)
        shape = (b, t, self.n_heads, d // self.n_heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        attn = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.out(F.gelu(self.fc(self.norm2(x)))))


class ByteTransformerLM(nn.Module):
    """A decoder-only transformer over bytes with learned positions and tied embeddings.

    Args:
        vocab_size: Token vocabulary (256 for bytes).
        d_model: Width of the residual stream.
        n_layers: Number of transformer blocks.
        n_heads: Attention heads per block; must divide ``d_model``.
        seq_len: Longest input sequence (positions learned).
        dropout: Dropout inside the blocks, in [0, 1).
        d_ff: Hidden width of the MLP (None = ``4 * d_model``).
        seed: Seed of the weight initialisation, drawn from a private generator: the weights
            depend only on the arguments, and the global RNG is neither read nor advanced.

    Raises:
        ValueError: For non-positive sizes, ``n_heads`` not dividing ``d_model``, or a dropout
            outside [0, 1).

    Example:
        >>> import torch
        >>> from recipes.model import ByteTransformerLM
        >>> a = ByteTransformerLM(d_model=32, n_layers=1, n_heads=2, seq_len=8, seed=1)
        >>> b = ByteTransformerLM(d_model=32, n_layers=1, n_heads=2, seq_len=8, seed=1)
        >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        True
        >>> a.num_parameters()
        21216
    """

    def __init__(
        self,
        vocab_size: int = 256,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        seq_len: int = 256,
        dropout: float = 0.0,
        d_ff: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("d_model", d_model),
            ("n_layers", n_layers),
            ("n_heads", n_heads),
            ("seq_len", seq_len),
        ):
            _positive_int(name, value)
        if d_model % n_heads:
            raise ValueError(
                f"n_heads ({n_heads}) must divide d_model ({d_model}); e.g. d_model=128 with "
                "n_heads=4."
            )
        if not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}.")
        d_ff = 4 * d_model if d_ff is None else _positive_int("d_ff", d_ff)
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.seq_len = seq_len
        # torch's layers initialise themselves from the global RNG; fork it so that building a
        # model never moves the caller's random stream, then initialise from our own generator.
        with torch.random.fork_rng(devices=[]):
            self.embed = nn.Embedding(vocab_size, d_model)
            self.pos = nn.Parameter(torch.zeros(seq_len, d_model))
            self.blocks = nn.ModuleList(
                _Block(d_model, n_heads, d_ff, float(dropout)) for _ in range(n_layers)
            )
            self.norm = nn.LayerNorm(d_model)
            self.drop = nn.Dropout(float(dropout))
        self._init_weights(seed, n_layers)

    @torch.no_grad()
    def _init_weights(self, seed: int, n_layers: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        std = 0.02
        nn.init.normal_(self.embed.weight, 0.0, std, generator=gen)
        nn.init.normal_(self.pos, 0.0, std, generator=gen)
        for module in self.blocks:
            block = cast(_Block, module)
            for layer in (block.qkv, block.fc):
                nn.init.normal_(layer.weight, 0.0, std, generator=gen)
                nn.init.zeros_(layer.bias)
            # Residual projections scaled down with depth (GPT-2).
            for layer in (block.proj, block.out):
                nn.init.normal_(layer.weight, 0.0, std / math.sqrt(2 * n_layers), generator=gen)
                nn.init.zeros_(layer.bias)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(batch, T, vocab_size)`` for integer tokens ``(batch, T)``."""
        if tokens.dim() != 2:
            raise ValueError(
                f"tokens must be (batch, T), got shape {tuple(tokens.shape)}. Add a batch "
                "dimension with tokens.unsqueeze(0)."
            )
        t = tokens.shape[1]
        if not 1 <= t <= self.seq_len:
            raise ValueError(
                f"sequence length {t} must lie in [1, {self.seq_len}] (the model's seq_len). "
                "Build the model with a larger seq_len or feed shorter sequences."
            )
        x = self.drop(self.embed(tokens.long()) + self.pos[:t])
        for block in self.blocks:
            x = block(x)
        return F.linear(self.norm(x), self.embed.weight)


def per_sample_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Next-byte cross-entropy of each sequence, averaged over its positions.

    The model sees ``tokens[:, :-1]`` and predicts ``tokens[:, 1:]``; the result is what
    :meth:`reweight.Reweighter.reduce` takes (``reduction="none"``, then a mean per sample).

    Args:
        model: A module mapping ``(batch, T)`` tokens to ``(batch, T, vocab)`` logits.
        tokens: Integer tokens ``(batch, T)`` with ``T >= 2``.

    Returns:
        A float tensor of shape ``(batch,)`` (nats per byte).

    Example:
        >>> import torch
        >>> from recipes.model import ByteTransformerLM, per_sample_loss
        >>> model = ByteTransformerLM(d_model=16, n_layers=1, n_heads=2, seq_len=8)
        >>> tokens = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
        >>> loss = per_sample_loss(model, tokens)  # about log(256) = 5.55 before training
        >>> loss.shape, bool((loss - 5.55).abs().max() < 0.25)
        (torch.Size([2]), True)
    """
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError(
            f"tokens must be (batch, T) with T >= 2 (an input and a next token), got shape "
            f"{tuple(tokens.shape)}."
        )
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be integers, got dtype {tokens.dtype}.")
    tokens = tokens.long()
    logits = model(tokens[:, :-1])
    b, t, v = logits.shape
    losses = F.cross_entropy(
        logits.reshape(b * t, v).float(), tokens[:, 1:].reshape(b * t), reduction="none"
    )
    return losses.view(b, t).mean(dim=1)


def make_optimizer(
    model: nn.Module, lr: float = 2e-3, weight_decay: float = 0.01
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only, fused where the build supports it.

    Biases, norms, embeddings and positions are not decayed. The fused kernel updates every
    parameter in one pass; on a busy 2-core CPU it was up to 2x faster per step than the
    default multi-tensor AdamW here, and no slower when the cores were idle.

    Args:
        model: The model whose parameters to optimise.
        lr: Learning rate.
        weight_decay: Decoupled weight decay for the matrices.

    Example:
        >>> from recipes.model import ByteTransformerLM, make_optimizer
        >>> opt = make_optimizer(ByteTransformerLM(d_model=16, n_layers=1, n_heads=2, seq_len=8))
        >>> [g["weight_decay"] for g in opt.param_groups]
        [0.01, 0.0]
    """
    if not lr > 0 or not weight_decay >= 0:
        raise ValueError(
            f"lr must be positive and weight_decay non-negative, got lr={lr!r}, "
            f"weight_decay={weight_decay!r}."
        )
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_matrix = param.dim() >= 2 and not name.endswith(("embed.weight", "pos"))
        (decay if is_matrix else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # fused unsupported for this build or device
        return torch.optim.AdamW(groups, lr=lr)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 10% of the peak at ``steps``.

    The factor is a pure function of the step, so a restored scheduler continues exactly.

    Example:
        >>> from recipes.model import ByteTransformerLM, make_optimizer, warmup_cosine
        >>> model = ByteTransformerLM(d_model=16, n_layers=1, n_heads=2, seq_len=8)
        >>> scheduler = warmup_cosine(make_optimizer(model, lr=1.0), steps=10, warmup_steps=2)
        >>> [round(f(s), 3) for f in scheduler.lr_lambdas[:1] for s in (0, 1, 2, 10)]
        [0.5, 1.0, 1.0, 0.1]
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
