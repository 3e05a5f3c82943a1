"""Paired image-to-image translation (source -> target, e.g. bright-field -> fluorescence) with uncertainty.

A diffusion model conditioned on the source (concatenated channels) gives K samples per input; their per-pixel
mean, median, standard deviation and median absolute deviation are the prediction and its uncertainty
(seed 002). The deterministic baseline (``train.objective: regression``) is the same UNet fed a zero image at
noise level 0 and trained with L1/L2 to output the target directly, so the comparison is between objectives,
not architectures. Inputs larger than the training size are processed in overlapping blended tiles.
"""

from __future__ import annotations

import numpy as np
import torch

from neurodiff.data.normalize import Normalizer
from neurodiff.errors import NeurodiffError
from neurodiff.nn.unet import Cond
from neurodiff.tasks.generate import sample_batch, sample_seed
from neurodiff.tiling import pad_to_multiple


def predict(net, image: torch.Tensor, channels: int, tile: int | None = None, overlap: int = 16) -> torch.Tensor:
    """Regression baseline: normalised source [N, Cs, *S] -> target [N, channels, *S] (tiled when larger)."""
    def run(src: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(src.shape[0], channels, *src.shape[2:], device=src.device)
        return net(x, torch.zeros(src.shape[0], device=src.device), Cond(image=src)).float()

    if tile and any(n > tile for n in image.shape[2:]):
        from neurodiff.tiling import tiled
        D = tiled(lambda x, s, region: run(image[(slice(None), slice(None), *region)]), tile, overlap)
        return D(torch.zeros(image.shape[0], channels, *image.shape[2:], device=image.device), None)
    return run(image)


@torch.no_grad()
def translate_array(model, source: np.ndarray, samples: int = 16, seed: int = 0, steps: int | None = None,
                    sampler: str | None = None, batch: int = 16, exact: bool = False, tile: int | None = None,
                    device="cpu", keep_samples: bool = False) -> dict[str, np.ndarray]:
    """Source [Cs, *S] in data units -> {"mean", "median", "std", "mad"[, "samples"]}, float32 target units.

    ``samples`` diffusion samples per input (sample k keyed to ``(seed, k)``), run ``batch`` at a time; a regression
    model gives one prediction ("mean" = "median", no spread maps).
    """
    cfg = model.cfg
    meta = cfg.data.meta
    if not meta.get("source_normalizer"):
        raise NeurodiffError(f"{getattr(model, 'source', 'the model')}: not a translation model (trained without "
                             "data.source or data.source_channels)")
    if source.ndim - 1 != cfg.model.dims:
        raise NeurodiffError(f"the input is {source.ndim - 1}D ({list(source.shape)}), the model is "
                             f"{cfg.model.dims}D")
    if source.shape[0] != cfg.model.cond_image_channels:
        raise NeurodiffError(f"the input has {source.shape[0]} channel(s), the model's source has "
                             f"{cfg.model.cond_image_channels}")
    if not np.isfinite(source).all():
        raise NeurodiffError("the input holds NaN or Inf values")
    if samples < 1 or batch < 1:
        raise NeurodiffError(f"--samples {samples} / --batch {batch}: expected integers >= 1")
    src_norm, tgt_norm = Normalizer(**meta["source_normalizer"]), Normalizer(**meta["normalizer"])
    s = torch.from_numpy(src_norm.normalize(source))[None].to(device)
    factor = 2 ** (len(cfg.model.channel_mult) - 1)
    s, crop = pad_to_multiple(s, factor)
    train_size = max((cfg.data.crop or meta.get("shape", [0, 0])[1:]) or [0])
    tile = tile if tile is not None else (cfg.sample.tile or train_size)
    if tile and tile % factor:
        raise NeurodiffError(f"--tile {tile}: must be a multiple of {factor} (the model's downsampling)")
    overlap = min(cfg.sample.overlap, tile // 2) if tile else 0
    c = cfg.model.in_channels
    shape = [c, *s.shape[2:]]
    if cfg.train.objective == "regression":
        ys = predict(model.net, s, c, tile, overlap)
    else:
        sc = cfg.sample
        ys = torch.cat([sample_batch(model.net, cfg, [sample_seed(seed, k) for k in range(k0, min(k0 + batch, samples))],
                                     None, None, 1.0, steps or sc.steps, sampler or sc.sampler, exact, shape=shape,
                                     device=device, image=s.expand(min(batch, samples - k0), *s.shape[1:]),
                                     tile=tile, overlap=overlap).cpu()
                        for k0 in range(0, samples, batch)])
    ys = ys.cpu() if crop is None else ys.cpu()[(slice(None), slice(None), *crop)]
    x = np.stack([tgt_norm.denormalize(y, "float32") for y in ys])              # [K, C, *S] in target units
    median = np.median(x, axis=0)
    out = {"mean": x.mean(0), "median": median}
    if len(x) > 1:
        out["std"] = x.std(0, ddof=1)
        out["mad"] = np.median(np.abs(x - median), axis=0)
    if keep_samples:
        out["samples"] = x
    return {k: v.astype(np.float32) for k, v in out.items()}
