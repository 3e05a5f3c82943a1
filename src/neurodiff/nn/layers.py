"""Rank-agnostic building blocks: one conv factory for dims 2|3, norm, SDPA attention, embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv(dims: int, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Module:
    """Conv2d or Conv3d with 'same' padding for odd kernels."""
    cls = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
    return cls(c_in, c_out, kernel, stride=stride, padding=kernel // 2)


def zero_(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Zero-initialise a layer so a residual branch starts as the identity (ADM); a no-op if not enabled."""
    for p in module.parameters() if enabled else ():
        nn.init.zeros_(p)
    return module


def norm(channels: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(channels, groups)
    return nn.GroupNorm(g, channels, eps=1e-6)


def timestep_embedding(c_noise: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of [N] noise levels -> [N, dim] (Vaswani et al. 2017, as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c_noise.device, dtype=torch.float32) / half)
    args = c_noise.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Downsample(nn.Module):
    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.op = conv(dims, channels, channels, 3, stride=2)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.conv = conv(dims, channels, channels, 3)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the embedding as scale and shift of the second norm (ADM)."""

    def __init__(self, dims: int, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float = 0.0,
                 zero_init: bool = False):
        super().__init__()
        self.norm1 = norm(c_in, groups)
        self.conv1 = conv(dims, c_in, c_out)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(conv(dims, c_out, c_out), zero_init)
        self.skip = conv(dims, c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)
        shape = (*scale.shape, *([1] * (x.ndim - 2)))
        h = torch.addcmul(shift.reshape(shape), self.norm2(h), 1 + scale.reshape(shape))   # one pass, not two
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over all spatial positions via scaled_dot_product_attention."""

    def __init__(self, dims: int, channels: int, heads: int, groups: int, zero_init: bool = False):
        super().__init__()
        while channels % heads:
            heads -= 1
        self.heads = heads
        self.norm = norm(channels, groups)
        self.qkv = conv(dims, channels, 3 * channels, 1)
        self.proj = zero_(conv(dims, channels, channels, 1), zero_init)

    def forward(self, x, emb=None):
        n, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, -1)
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # [N, heads, L, c/heads]
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(n, c, *spatial)
        return x + self.proj(h)


class CrossAttention(nn.Module):
    """Spatial positions attend to a few context tokens [N, T, D] (covariates as tokens; Rombach et al. 2022)."""

    def __init__(self, dims: int, channels: int, context_dim: int, heads: int, groups: int, zero_init: bool = False):
        super().__init__()
        while channels % heads:
            heads -= 1
        self.heads = heads
        self.norm = norm(channels, groups)
        self.q = conv(dims, channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_(conv(dims, channels, channels, 1), zero_init)

    def forward(self, x, context):
        n, c, *spatial = x.shape
        q = self.q(self.norm(x)).reshape(n, self.heads, c // self.heads, -1).transpose(-1, -2)
        k, v = self.kv(context.to(x.dtype)).reshape(n, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)          # [N, heads, L, c/heads]
        return x + self.proj(h.transpose(-1, -2).reshape(n, c, *spatial))
