"""The `neurodiff inpaint` command: read image and mask, RePaint tile by tile, write in the input's format."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np

from neurodiff import dist
from neurodiff.data import io
from neurodiff.errors import NeurodiffError
from neurodiff.tasks.generate import covariate_row, parse_covariates, resolve_label
from neurodiff.tasks.inpaint import inpaint_array, parse_boxes


def read_mask(path, spatial: tuple[int, ...]) -> np.ndarray:
    """A mask file -> bool [*spatial] (non-zero in any channel = fill), checked against the image's size."""
    m, _ = io.read(path)
    if tuple(m.shape[1:]) != tuple(spatial):
        raise NeurodiffError(f"{path}: mask shape {list(m.shape[1:])} does not match the image's {list(spatial)}")
    return (m != 0).any(0)


def run_inpaint(args, load_model) -> dict:
    """``args`` from the CLI parser; ``load_model(path)`` -> LoadedModel (passed in: tasks sit below train)."""
    t0 = time.perf_counter()
    model = load_model(args.model, dist.init())   # the GPU when there is one
    lazy = io.format_of(args.image) == "zarr" and io.format_of(args.out) == "zarr"
    if lazy:  # zarr in and out: tile by tile, never the whole image in memory
        from neurodiff.data import zarrio
        image, meta = zarrio.open_lazy(args.image)
    else:
        image, meta = io.read(args.image)
    spatial = tuple(image.shape[1:])
    mask = parse_boxes(args.box, spatial)
    if args.mask:
        mask |= read_mask(args.mask, spatial)
    if not mask.any():
        raise NeurodiffError(f"{args.mask or '--box'}: the mask is empty (non-zero = fill); nothing to do")
    cfg = model.cfg
    label = resolve_label(cfg, args.label)
    guidance = args.guidance if args.guidance is not None else cfg.sample.guidance
    out = None
    if lazy:
        out = zarrio.create(args.out, image.shape, image.dtype, meta)
        zarrio.copy_regions(image, out)
    out, info = inpaint_array(model, image, mask, steps=args.steps, jump=args.jump, resample=args.resample,
                              jump_until=args.jump_until, eta=args.eta, tile=args.tile, overlap=args.overlap,
                              label=label,
                              scalars=covariate_row(cfg, parse_covariates(args.covariate)), guidance=guidance,
                              seed=args.seed, progress=not args.no_progress, out=out, precision=args.precision)
    if lazy:
        zarrio.commit(args.out)
    else:
        io.write(args.out, out, meta)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info.update(seconds=time.perf_counter() - t0, peak_rss_mib=peak)
    print(f"filled {info['fraction_filled']:.1%} of {'x'.join(map(str, spatial))} in {info['tiles']} of "
          f"{info['tiles_total']} tiles, {info['network_calls_per_tile']} network calls each; wrote {Path(args.out)} "
          f"in {info['seconds']:.0f} s (peak memory {peak:.0f} MiB)")
    return info
