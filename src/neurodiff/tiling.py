"""Tiles: an overlapping 2D/3D grid, blending windows, and a denoiser evaluated tile by tile.

A tiled denoiser returns the window-weighted average of the per-tile x0 estimates at every step, so
neighbouring tiles agree where they overlap and no seam forms (the denoiser, not the final image, is blended).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


def starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering [0, size) with tiles of ``tile`` overlapping by at least ``overlap``."""
    if tile >= size:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap}: expected 0 <= overlap < tile ({tile})")
    n = -(-(size - overlap) // (tile - overlap))           # ceil
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def axis_spans(spatial: list[int], tile: int, overlap: int) -> list[list[slice]]:
    """Per spatial axis, the tiles' intervals along it: the grid's tiles are their product (``regions``)."""
    return [[slice(s, s + min(tile, n)) for s in starts(n, tile, overlap)] for n in spatial]


def regions(spatial: list[int], tile: int, overlap: int) -> list[tuple[slice, ...]]:
    """All tiles of a grid, as tuples of slices over the spatial axes (the first axis varies slowest)."""
    return list(itertools.product(*axis_spans(spatial, tile, overlap)))


def window(shape: list[int], overlap: int, device=None) -> torch.Tensor:
    """Separable blending weights: linear ramps over ``overlap`` voxels at each edge, > 0 everywhere."""
    w = torch.ones(shape, device=device)
    for axis, n in enumerate(shape):
        ramp = torch.ones(n, device=device)
        k = min(overlap, n // 2)
        if k:
            edge = (torch.arange(k, device=device, dtype=torch.float32) + 1) / (k + 1)
            ramp[:k], ramp[n - k:] = edge, edge.flip(0)
        view = [1] * len(shape)
        view[axis] = n
        w = w * ramp.view(view)
    return w


def pad_to_multiple(x: torch.Tensor, factor: int, value: float | None = None):
    """Pad [N, C, *S] at the far ends to multiples of ``factor`` (reflect, or ``value``) -> (x, crop back or None)."""
    pads = [(-n) % factor for n in x.shape[2:]]
    if not any(pads):
        return x, None
    spec = [v for p in reversed(pads) for v in (0, p)]
    if value is not None:
        return F.pad(x, spec, value=value), tuple(slice(0, n) for n in x.shape[2:])
    mode = "reflect" if all(p < n for p, n in zip(pads, x.shape[2:])) else "replicate"
    return F.pad(x, spec, mode=mode), tuple(slice(0, n) for n in x.shape[2:])


def tiled(denoise_tile, tile: int, overlap: int):
    """``D(x, sigma)`` from ``denoise_tile(x_tile, sigma, region)``: per-tile estimates blended by ``window``."""
    def D(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        spatial = list(x.shape[2:])
        out = torch.zeros_like(x, dtype=torch.float32)
        weight = torch.zeros(spatial, device=x.device)
        for region in regions(spatial, tile, overlap):
            idx = (slice(None), slice(None), *region)
            w = window([r.stop - r.start for r in region], overlap, x.device)
            out[idx] += denoise_tile(x[idx], sigma, region).float() * w
            weight[region] += w
        return out / weight
    return D


def slab_decode(decode, z: torch.Tensor, slab: int, halo: int, factor: int) -> torch.Tensor:
    """``decode(z)`` of a [N, Z, *S] latent in slabs of ``slab`` latent voxels along the first spatial axis, each
    decoded with ``halo`` extra voxels either side that are then cut off: memory is that of one slab.
    GroupNorm statistics are per slab, so the result approximates the whole decode (tests bound the difference)."""
    n = z.shape[2]
    if not slab or slab >= n:
        return decode(z)
    parts = []
    for lo in range(0, n, slab):
        hi = min(n, lo + slab)
        a, b = max(0, lo - halo), min(n, hi + halo)
        x = decode(z[:, :, a:b])
        parts.append(x[:, :, (lo - a) * factor:(hi - a) * factor])
    return torch.cat(parts, dim=2)
