"""UNet for images (dims=2) and volumes (dims=3) from one code path, with conditioning (``Cond``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from neurodiff.errors import NeurodiffError
from neurodiff.nn.layers import Attention, CrossAttention, Downsample, ResBlock, Upsample, conv, norm, timestep_embedding, zero_


@dataclass
class Cond:
    """Conditioning for a batch of N: label [N] long, scalars [N, K], image [N, Ci, *S], drop [N] bool.

    ``drop`` marks samples whose label and scalars are replaced by the learned null tokens
    (classifier-free guidance); the concatenated ``image`` is never dropped.
    """

    label: torch.Tensor | None = None
    scalars: torch.Tensor | None = None
    image: torch.Tensor | None = None
    drop: torch.Tensor | None = None

    def select(self, idx) -> "Cond":
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return Cond(pick(self.label), pick(self.scalars), pick(self.image), pick(self.drop))

    def repeat(self, times: int) -> "Cond":
        rep = lambda t: None if t is None else torch.cat([t] * times)  # noqa: E731
        return Cond(rep(self.label), rep(self.scalars), rep(self.image), rep(self.drop))


class UNet(nn.Module):
    """``net(x, c_noise, cond) -> tensor`` with residual blocks, scale-shift embedding and attention levels."""

    def __init__(self, dims: int = 2, in_channels: int = 1, out_channels: int = 0, channels: int = 32,
                 channel_mult=(1, 2, 2), num_res_blocks: int = 1, attn_levels=(2,), num_heads: int = 4,
                 num_classes: int = 0, num_scalars: int = 0, cond_image_channels: int = 0,
                 dropout: float = 0.0, groups: int = 8, checkpointing: bool = False, channels_last: bool = True,
                 zero_init: bool = False, scalar_channels: bool = False, cross_attn: bool = False):
        super().__init__()
        if dims not in (2, 3):
            raise NeurodiffError(f"model.dims: expected 2 or 3, got {dims}")
        self.dims, self.in_channels = dims, in_channels
        self.out_channels = out_channels or in_channels
        self.num_classes, self.num_scalars = num_classes, num_scalars
        self.cond_image_channels = cond_image_channels
        if (scalar_channels or cross_attn) and not num_scalars:
            raise NeurodiffError("model.scalar_channels / model.cross_attn: need covariates (model.num_scalars > 0)")
        # covariates also as constant input channels (+1 channel: 1 = given, 0 = dropped) and as attention tokens
        self.scalar_channels = num_scalars + 1 if scalar_channels else 0
        self.cross_attn = cross_attn
        self.levels = len(channel_mult)
        blocks_per_level = _per_level(num_res_blocks, self.levels)
        self.checkpointing = checkpointing
        emb_dim = 4 * channels
        self.base_channels = channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes:
            self.label_emb = nn.Embedding(num_classes + 1, emb_dim)  # index num_classes = null token
        if num_scalars:
            self.scalar_mlp = nn.Sequential(nn.Linear(num_scalars, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.scalar_null = nn.Parameter(torch.zeros(emb_dim))
        if cross_attn:   # token k = MLP(s_k * w_k + b_k); a learned null token set replaces them under CFG dropout
            self.token_w = nn.Parameter(torch.randn(num_scalars, emb_dim))
            self.token_b = nn.Parameter(torch.zeros(num_scalars, emb_dim))
            self.token_mlp = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.token_null = nn.Parameter(torch.zeros(num_scalars, emb_dim))

        self.input = conv(dims, in_channels + cond_image_channels + self.scalar_channels, channels)
        self.down = nn.ModuleList()
        skips, c = [channels], channels
        for level, mult in enumerate(channel_mult):
            for _ in range(blocks_per_level[level]):
                blocks = [ResBlock(dims, c, channels * mult, emb_dim, groups, dropout, zero_init)]
                c = channels * mult
                if level in attn_levels:
                    blocks.append(Attention(dims, c, num_heads, groups, zero_init))
                    if cross_attn:
                        blocks.append(CrossAttention(dims, c, emb_dim, num_heads, groups, zero_init))
                self.down.append(nn.ModuleList(blocks))
                skips.append(c)
            if level < self.levels - 1:
                self.down.append(nn.ModuleList([Downsample(dims, c)]))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(dims, c, c, emb_dim, groups, dropout, zero_init)])
        if attn_levels:
            self.mid.append(Attention(dims, c, num_heads, groups, zero_init))
            if cross_attn:
                self.mid.append(CrossAttention(dims, c, emb_dim, num_heads, groups, zero_init))
        self.mid.append(ResBlock(dims, c, c, emb_dim, groups, dropout, zero_init))
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(blocks_per_level[level] + 1):
                blocks = [ResBlock(dims, c + skips.pop(), channels * mult, emb_dim, groups, dropout, zero_init)]
                c = channels * mult
                if level in attn_levels:
                    blocks.append(Attention(dims, c, num_heads, groups, zero_init))
                    if cross_attn:
                        blocks.append(CrossAttention(dims, c, emb_dim, num_heads, groups, zero_init))
                if level > 0 and i == blocks_per_level[level]:
                    blocks.append(Upsample(dims, c))
                self.up.append(nn.ModuleList(blocks))
        self.out = nn.Sequential(norm(c, groups), nn.SiLU(), zero_(conv(dims, c, self.out_channels), zero_init))
        # Channels-last activations make oneDNN's convolutions 10-15% faster on CPUs (bench/NOTES.md).
        self.memory_format = ({2: torch.channels_last, 3: torch.channels_last_3d}[dims] if channels_last
                              else torch.contiguous_format)
        self.to(memory_format=self.memory_format)

    def _embed(self, c_noise: torch.Tensor, cond: Cond, n: int) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(c_noise, self.base_channels))
        drop = cond.drop if cond.drop is not None else torch.zeros(n, dtype=torch.bool, device=emb.device)
        if cond.label is not None:
            if not self.num_classes:
                raise NeurodiffError("a label was given to a model built without labels (model.num_classes=0)")
            label = cond.label.long()
            if label.shape != (n,):
                raise NeurodiffError(f"label: expected shape [{n}], got {list(label.shape)}")
            if (label < 0).any() or (label > self.num_classes).any():
                raise NeurodiffError(f"label out of range: expected 0..{self.num_classes - 1} ({self.num_classes} = null), "
                                     f"got {label.min().item()}..{label.max().item()}")
            emb = emb + self.label_emb(torch.where(drop, self.num_classes, label))
        elif self.num_classes:  # no label given: the unconditional (null) token
            emb = emb + self.label_emb.weight[self.num_classes]
        if cond.scalars is not None:
            if not self.num_scalars:
                raise NeurodiffError("covariates were given to a model built without them (model.num_scalars=0)")
            if cond.scalars.shape != (n, self.num_scalars):
                raise NeurodiffError(f"covariates: expected shape [{n}, {self.num_scalars}], "
                                     f"got {list(cond.scalars.shape)}")
            s = self.scalar_mlp(cond.scalars.to(emb.dtype))
            emb = emb + torch.where(drop[:, None], self.scalar_null.to(s.dtype), s)
        elif self.num_scalars:
            emb = emb + self.scalar_null
        return emb

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Cond | None = None) -> torch.Tensor:
        cond = cond or Cond()
        n, _, *spatial = x.shape
        if len(spatial) != self.dims:
            raise NeurodiffError(f"input: a {self.dims}D model expects [N, C, {'D, ' if self.dims == 3 else ''}"
                                 f"H, W], got shape {list(x.shape)}")
        factor = 2 ** (self.levels - 1)
        if any(s % factor for s in spatial):
            raise NeurodiffError(f"input size {spatial}: every spatial size must be a multiple of {factor} "
                                 f"for a UNet with {self.levels} levels")
        if cond.image is not None:
            if not self.cond_image_channels:
                raise NeurodiffError("a conditioning image was given to a model built without one "
                                     "(model.cond_image_channels=0)")
            if cond.image.shape[1] != self.cond_image_channels or list(cond.image.shape[2:]) != spatial:
                raise NeurodiffError(f"conditioning image: expected [N, {self.cond_image_channels}, "
                                     f"{', '.join(map(str, spatial))}], got {list(cond.image.shape)}")
            x = torch.cat([x, cond.image.to(x.dtype)], dim=1)
        elif self.cond_image_channels:
            raise NeurodiffError(f"this model needs a conditioning image with {self.cond_image_channels} channels")
        if x.shape[1] != self.in_channels + self.cond_image_channels:
            raise NeurodiffError(f"input: expected {self.in_channels} channels, got "
                                 f"{x.shape[1] - self.cond_image_channels}")
        if c_noise.ndim == 0:
            c_noise = c_noise.expand(n)
        emb = self._embed(c_noise, cond, n)
        given = self._given(cond, n, x.device)
        if self.scalar_channels:
            s = cond.scalars if cond.scalars is not None else torch.zeros(n, self.num_scalars, device=x.device)
            s = torch.cat([s.to(x.dtype) * given[:, None], given[:, None].to(x.dtype)], dim=1)
            x = torch.cat([x, s.reshape(n, -1, *([1] * self.dims)).expand(n, -1, *spatial)], dim=1)
        tokens = self._tokens(cond, given, emb.dtype) if self.cross_attn else None
        h = self.input(x.contiguous(memory_format=self.memory_format))
        hs = [h]
        for blocks in self.down:
            for b in blocks:
                h = self._run(b, h, emb, tokens)
            hs.append(h)
        for b in self.mid:
            h = self._run(b, h, emb, tokens)
        for blocks in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for b in blocks:
                h = self._run(b, h, emb, tokens)
        return self.out(h)

    def _given(self, cond: Cond, n: int, device) -> torch.Tensor:
        """[N] float: 1 where covariates are given and not dropped (CFG), else 0."""
        if cond.scalars is None:
            return torch.zeros(n, device=device)
        drop = cond.drop if cond.drop is not None else torch.zeros(n, dtype=torch.bool, device=device)
        return (~drop).float()

    def _tokens(self, cond: Cond, given: torch.Tensor, dtype) -> torch.Tensor:
        """[N, K, D] covariate tokens; the learned null tokens where covariates are dropped or absent."""
        n = given.shape[0]
        null = self.token_null.expand(n, -1, -1)
        if cond.scalars is None:
            return null
        t = self.token_mlp(cond.scalars.to(self.token_w.dtype)[:, :, None] * self.token_w + self.token_b)
        return torch.where(given[:, None, None] > 0, t, null.to(t.dtype))

    def _run(self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor, tokens=None) -> torch.Tensor:
        if isinstance(block, (Downsample, Upsample)):
            return block(h)
        if isinstance(block, CrossAttention):
            return block(h, tokens)
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)


def _per_level(num_res_blocks, levels: int) -> tuple[int, ...]:
    """``num_res_blocks`` as one int for every level or one int per level."""
    if isinstance(num_res_blocks, int):
        return (num_res_blocks,) * levels
    blocks = tuple(int(b) for b in num_res_blocks)
    if len(blocks) != levels or min(blocks) < 1:
        raise NeurodiffError(f"model.num_res_blocks: expected one int >= 1 or {levels} of them (one per level), "
                             f"got {list(num_res_blocks)}")
    return blocks


def build_unet(model_cfg) -> UNet:
    """UNet from a ``ModelConfig`` (in_channels must already be resolved)."""
    m = model_cfg
    return UNet(dims=m.dims, in_channels=m.in_channels, out_channels=m.out_channels, channels=m.channels,
                channel_mult=tuple(m.channel_mult), num_res_blocks=m.num_res_blocks,
                attn_levels=tuple(m.attn_levels), num_heads=m.num_heads, num_classes=m.num_classes,
                num_scalars=m.num_scalars, cond_image_channels=m.cond_image_channels, dropout=m.dropout,
                groups=m.groups, checkpointing=m.checkpointing, channels_last=m.channels_last,
                zero_init=m.zero_init, scalar_channels=m.scalar_channels, cross_attn=m.cross_attn)
