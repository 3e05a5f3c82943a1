"""Codecs between data space and the space diffusion runs in: ``encode(x) -> z``, ``decode(z) -> x``.

``Identity`` for pixel space; ``KLCodec`` for latent diffusion: the KL autoencoder's posterior mean, shifted and
scaled to unit variance by constants measured once on the training latents and stored with the diffusion model
(``data.meta.latent``), never a hard-coded 0.18215.
"""

from __future__ import annotations

import torch

from neurodiff.errors import NeurodiffError


class Identity:
    factor = 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


class KLCodec:
    """z = (mean(x) - shift) / scale; decode in slabs of ``slab`` latent voxels when the volume is large.

    The decoder normalises per voxel, so with ``halo`` at least its receptive field (about 8 latent voxels for
    the 4x and 8x layouts) the slabs equal the whole decode."""

    def __init__(self, ae, shift: float = 0.0, scale: float = 1.0, slab: int = 0, halo: int = 8,
                 digest: str = "", source: str = ""):
        self.ae, self.shift, self.scale, self.slab, self.halo = ae, float(shift), float(scale), slab, halo
        self.factor, self.digest, self.source = ae.factor, digest, source

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mean, _ = self.ae.encode(x)
        return (mean - self.shift) / self.scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        from neurodiff.tiling import slab_decode

        return slab_decode(self.ae.decode, z * self.scale + self.shift, self.slab, self.halo, self.factor)


def measure_scale(latents: torch.Tensor) -> tuple[float, float]:
    """(shift, scale): the mean and standard deviation of the training latents (all elements)."""
    z = latents.double()
    return float(z.mean()), float(z.std().clamp_min(1e-8))
