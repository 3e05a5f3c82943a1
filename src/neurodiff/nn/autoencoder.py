"""KL autoencoder (dims=2|3) for latent diffusion, its patch discriminator and its losses.

Encoder: conv, residual blocks and stride-2 convolutions (one per level after the first: 4x or 8x per axis),
then a 1x1 conv to the posterior's mean and log-variance (Rombach et al. 2022; Pinaya et al. 2022 for 3D).
Losses: L1 + (1 - SSIM) + KL, a hinge patch-adversarial term after a warm-up (Esser et al. 2021), and a
perceptual term only when the user gives local feature weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from neurodiff.errors import NeurodiffError
from neurodiff.nn.layers import conv, norm


class VoxelNorm(nn.Module):
    """Layer norm over the channels of each voxel (ConvNeXt): no statistics over space, so a volume decoded in
    slabs with a halo as wide as the receptive field equals the whole decode (GroupNorm's would differ)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        x = F.layer_norm(x.movedim(1, -1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)


def _norm(c: int, groups: int, local: bool) -> nn.Module:
    return VoxelNorm(c) if local else norm(c, groups)


class Block(nn.Module):
    """Norm-SiLU-conv twice with a residual path (no time embedding); ``local``: VoxelNorm instead of GroupNorm."""

    def __init__(self, dims: int, c_in: int, c_out: int, groups: int, local: bool = False):
        super().__init__()
        self.body = nn.Sequential(_norm(c_in, groups, local), nn.SiLU(), conv(dims, c_in, c_out),
                                  _norm(c_out, groups, local), nn.SiLU(), conv(dims, c_out, c_out))
        self.skip = conv(dims, c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class KLAutoencoder(nn.Module):
    """``encode(x) -> (mean, logvar)`` of a diagonal Gaussian, ``decode(z) -> x``; x [N, C, *S], z [N, Z, *S/f]."""

    def __init__(self, dims: int = 3, in_channels: int = 1, channels: int = 32, channel_mult=(1, 2, 2),
                 num_res_blocks: int = 1, z_channels: int = 4, groups: int = 8, checkpointing: bool = False):
        super().__init__()
        if dims not in (2, 3):
            raise NeurodiffError(f"autoencoder.dims: expected 2 or 3, got {dims}")
        self.dims, self.in_channels, self.z_channels = dims, in_channels, z_channels
        self.factor = 2 ** (len(channel_mult) - 1)
        self.checkpointing = checkpointing
        widths = [channels * m for m in channel_mult]
        enc, c = [conv(dims, in_channels, widths[0])], widths[0]
        for level, w in enumerate(widths):
            for _ in range(num_res_blocks):
                enc.append(Block(dims, c, w, groups))
                c = w
            if level < len(widths) - 1:
                enc.append(conv(dims, c, c, 3, stride=2))
        enc += [Block(dims, c, c, groups), norm(c, groups), nn.SiLU(), conv(dims, c, 2 * z_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        # the decoder normalises per voxel: large volumes are decoded in slabs (codec.py) without seams
        dec = [conv(dims, z_channels, c), Block(dims, c, c, groups, local=True)]
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks):
                dec.append(Block(dims, c, w, groups, local=True))
                c = w
            if level > 0:
                dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), conv(dims, c, c)]
        dec += [VoxelNorm(c), nn.SiLU(), conv(dims, c, in_channels)]
        self.decoder = nn.Sequential(*dec)

    def _seq(self, layers: nn.Sequential, x):
        for layer in layers:
            use_ckpt = self.checkpointing and self.training and torch.is_grad_enabled() and isinstance(layer, Block)
            x = checkpoint(layer, x, use_reentrant=False) if use_ckpt else layer(x)
        return x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            raise NeurodiffError(f"autoencoder input: expected [N, {self.in_channels}, {self.dims} sizes], "
                                 f"got {list(x.shape)}")
        if any(s % self.factor for s in x.shape[2:]):
            raise NeurodiffError(f"autoencoder input size {list(x.shape[2:])}: every size must be a multiple of "
                                 f"{self.factor}")
        mean, logvar = self._seq(self.encoder, x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != self.dims + 2 or z.shape[1] != self.z_channels:
            raise NeurodiffError(f"latent: expected [N, {self.z_channels}, {self.dims} sizes], got {list(z.shape)}")
        return self._seq(self.decoder, z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """(reconstruction from a posterior sample, mean, logvar)."""
        mean, logvar = self.encode(x)
        eps = torch.randn(mean.shape, generator=generator).to(mean)
        return self.decode(mean + torch.exp(0.5 * logvar) * eps), mean, logvar


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): stride-2 convolutions to a map of real/fake logits, one per patch."""

    def __init__(self, dims: int, in_channels: int = 1, channels: int = 32, layers: int = 3, groups: int = 8):
        super().__init__()
        mods, c = [conv(dims, in_channels, channels, 4, stride=2), nn.LeakyReLU(0.2)], channels
        for i in range(1, layers):
            w = channels * min(2 ** i, 8)
            mods += [conv(dims, c, w, 4, stride=2), norm(w, groups), nn.LeakyReLU(0.2)]
            c = w
        mods.append(conv(dims, c, 1, 3))
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over latent elements, averaged over the batch."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window: int = 7, data_range: float = 2.0) -> torch.Tensor:
    """1 - mean SSIM with a uniform window (Wang et al. 2004), differentiable; 2D or 3D; data in [-1, 1]."""
    pool = {4: F.avg_pool2d, 5: F.avg_pool3d}[x.ndim]
    window = min(window, *x.shape[2:])
    mu_x, mu_y = pool(x, window, 1), pool(y, window, 1)
    var_x = pool(x * x, window, 1) - mu_x ** 2
    var_y = pool(y * y, window, 1) - mu_y ** 2
    cov = pool(x * y, window, 1) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return 1.0 - s.mean()


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def perceptual_loss(features, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared distance of feature maps of a user-given network (``features(x) -> [N, F]`` or maps); 3D volumes
    are fed to a 2D network as their slices along the first axis."""
    if x.ndim == 5 and getattr(features, "dims", 2) == 2:
        x, y = (t.transpose(1, 2).flatten(0, 1) for t in (x, y))
    return F.mse_loss(features(x), features(y))


def build_autoencoder(ae_cfg, in_channels: int) -> KLAutoencoder:
    a = ae_cfg
    return KLAutoencoder(dims=a.dims, in_channels=in_channels, channels=a.channels,
                         channel_mult=tuple(a.channel_mult), num_res_blocks=a.num_res_blocks,
                         z_channels=a.z_channels, groups=a.groups, checkpointing=a.checkpointing)
