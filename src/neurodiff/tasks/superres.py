"""Cascaded super-resolution: stages conditioned on the upsampled low-res image with noise-conditioning
augmentation (Ho et al. 2021, "Cascaded diffusion models"): in training the low-res input gets Gaussian noise of
a random level that the net is told (a scalar condition); at sampling the level is fixed (``sample.sr_aug_level``).
Outputs larger than the training crop are sampled in overlapping tiles (tiling.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neurodiff.data.normalize import Normalizer
from neurodiff.errors import NeurodiffError
from neurodiff.tasks.generate import sample_batch, sample_seed


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """[N, C, *S] -> [N, C, *S/factor] by block averaging (binning, as a coarser detector would)."""
    return F.interpolate(x, scale_factor=1.0 / factor, mode="area")


def upsample(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """[N, C, *s] -> [N, C, *size]: bicubic (2D) or trilinear (3D), the baseline every stage must beat."""
    mode = "bicubic" if x.ndim == 4 else "trilinear"
    return F.interpolate(x, size=list(size), mode=mode, align_corners=False).clamp(-1, 1)


def lowres_input(x: torch.Tensor, factor: int, max_level: float, g: torch.Generator) -> tuple[torch.Tensor, float]:
    """Training input of a stage for one sample [C, *S]: degraded, upsampled, noised at a level in [0, max]."""
    spatial = x.shape[1:]
    if any(s % factor for s in spatial):
        raise NeurodiffError(f"data.sr_factor {factor}: the sample size {list(spatial)} is not divisible by it")
    up = upsample(downsample(x[None], factor), spatial)[0]
    level = float(torch.rand(1, generator=g)) * max_level if max_level else 0.0
    if level:
        up = up + level * torch.randn(up.shape, generator=g)
    return up, level


@torch.no_grad()
def super_resolve(model, lowres: torch.Tensor, seeds: list[int], steps: int | None = None, sampler: str | None = None,
                  exact: bool = True, device="cpu", tile: int | None = None) -> torch.Tensor:
    """One stage: normalised [N, C, *s] -> [N, C, *s*factor] in the stage's normalised units."""
    cfg = model.cfg
    f = cfg.data.sr_factor
    if not f:
        raise NeurodiffError(f"{model.source}: not a super-resolution stage (data.sr_factor=0)")
    size = [s * f for s in lowres.shape[2:]]
    up = upsample(lowres.float(), size)
    level = cfg.sample.sr_aug_level if cfg.data.sr_noise_aug else 0.0
    if level:
        gens = [torch.Generator().manual_seed(sample_seed(s, -1)) for s in seeds]   # the input's noise, per sample
        up = up + level * torch.stack([torch.randn(up.shape[1:], generator=g) for g in gens]).to(up.device)
    scalars = [[level]] * len(seeds) if cfg.data.sr_noise_aug else None
    crop = cfg.data.crop[0] if cfg.data.crop else None
    tile = tile or cfg.sample.tile or crop
    sc = cfg.sample
    return sample_batch(model.net, cfg, seeds, None, scalars, 1.0, steps or sc.steps, sampler or sc.sampler, exact,
                        shape=[lowres.shape[1], *size], device=device, image=up.to(device), tile=tile,
                        overlap=min(sc.overlap, tile // 2) if tile else 0)


def renormalize(x: torch.Tensor, src_cfg, dst_cfg) -> torch.Tensor:
    """Normalised units of one model -> those of the next (each stage has its own intensity normaliser)."""
    a = Normalizer(**src_cfg.data.meta["normalizer"])
    b = Normalizer(**dst_cfg.data.meta["normalizer"])
    if (a.lo, a.hi) == (b.lo, b.hi):
        return x
    data = a.lo + (x.double().clamp(-1, 1) + 1) * 0.5 * (a.hi - a.lo)
    return ((data - b.lo) * (2.0 / (b.hi - b.lo)) - 1.0).float()


def _check_units(src_cfg, stage) -> None:
    """Stages map intensities by their data units: warn when two models' training ranges look like other units."""
    a, b = (Normalizer(**c.data.meta["normalizer"]) for c in (src_cfg, stage.cfg))
    ratio = (a.hi - a.lo) / max(b.hi - b.lo, 1e-12)
    if not 0.25 < ratio < 4:
        print(f"warning: {stage.source}: trained on data in [{b.lo:.4g}, {b.hi:.4g}], the model before it on "
              f"[{a.lo:.4g}, {a.hi:.4g}]; stages must be trained on data in the same units (e.g. both 8-bit)",
              flush=True)


def cascade(stages: list, x: torch.Tensor, src_cfg, seeds: list[int], steps: int | None = None,
            exact: bool = True, device="cpu") -> list[torch.Tensor]:
    """Chain ``x`` (normalised in ``src_cfg``'s units) through every stage; the output of each stage in turn."""
    outs = []
    for j, stage in enumerate(stages):
        _check_units(src_cfg, stage)
        x = renormalize(x, src_cfg, stage.cfg)
        x = super_resolve(stage, x, [sample_seed(s, j + 1) for s in seeds], steps, exact=exact, device=device)
        outs.append(x.cpu())
        src_cfg = stage.cfg
    return outs
