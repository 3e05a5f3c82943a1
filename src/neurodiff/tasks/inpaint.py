"""Inpainting with RePaint (Lugmayr et al. 2022) for any neurodiff model, 2D or 3D, at any image size.

Mask convention: non-zero = to fill (artefact), zero = known. At every step down the noise schedule the known
pixels are replaced by the input noised to the new level, so the model only invents the masked part and
harmonises it with what is known; RePaint's "jumps" go back up ``jump`` steps ``resample - 1`` times at regular
points of the schedule to let both parts agree. The schedule is data (``jump_schedule``: the list of schedule
indices visited), so its cost in network calls is counted before anything runs.

Every jump re-noises the fill and denoises it again, and a denoiser that is not exact loses a little of the fine
structure each time: a small model's fills can grow darker and lose nuclei with every resampling, most in the
late, low-noise part of the schedule (bench/inpaint_he.sh; on bench/inpaint_ihc.sh they did not, see the README).
``jump_until`` keeps the jumps to the noisiest fraction of the schedule, where the fill's layout is decided, and
``eta`` sets how much fresh noise a step down adds inside the mask (1: ancestral, DDPM-like as in RePaint; 0:
deterministic, DDIM-like).

Large images are processed tile by tile (only tiles whose written part touches the mask), each tile a full RePaint
run in which pixels already filled by earlier tiles count as known, and memory is that of one tile whatever the
image size. A hard line between two tiles' fills would step like a hole's edge (the fill never matches what is known
exactly), so a tile also refills a band of its neighbours' fills (``feather``, half the overlap) with a soft mask: the
further into the band, the later in the schedule a pixel is released from its neighbour's value, which the fill
then only refines. Known pixels are copied from the input array,
never re-quantised: they are bit-identical in the output.

Latent models (trained with ``--codec``) inpaint in latent space: each tile is encoded, a latent voxel is to fill
when any pixel of its block is masked, RePaint blends the encoded known latents in, the result is decoded, and
only the masked pixels are taken from the decode: the known pixels are restored exactly.
"""

from __future__ import annotations

import functools
import itertools
import sys

import numpy as np
import torch

from neurodiff.data.normalize import Normalizer
from neurodiff.diffusion.denoiser import make_precond
from neurodiff.diffusion.samplers import _D, ancestral_step, randn_like
from neurodiff.diffusion.schedules import sampling_sigmas
from neurodiff.errors import ImageValuesError, NeurodiffError
from neurodiff.tasks.generate import build_denoiser, make_cond, sample_seed, sampling_autocast
from neurodiff.tasks.masks import auto_tile, square_side
from neurodiff.tasks.repaint_state import RepaintState, drop_region, keep_region, kept_region, run_key, state_key
from neurodiff.tiling import axis_spans, pad_to_multiple


def jump_schedule(steps: int, jump: int = 10, resample: int = 10, until: float = 1.0) -> list[int]:
    """Indices into a schedule of ``steps + 1`` sigmas (0 = noisiest, steps = clean), in the order visited.

    Going down one index costs a network call; going up adds noise. With r steps left, at every r that is a
    multiple of ``jump`` (0 < r, r + jump <= steps) the walk goes back up ``jump`` steps, ``resample - 1`` times;
    ``until`` < 1 keeps those jumps to the first ``until`` of the steps (steps - r <= until * steps).
    """
    for name, v, lo in (("steps", steps, 1), ("jump", jump, 1), ("resample", resample, 1)):
        if not isinstance(v, int) or v < lo:
            raise NeurodiffError(f"--{name}: expected an integer >= {lo}, got {v}")
    if isinstance(until, bool) or not isinstance(until, (int, float)) or not 0 <= until <= 1:
        raise NeurodiffError(f"--jump-until: expected a fraction of the steps in [0, 1], got {until}")
    seq, i, done = [0], 0, {}
    while i < steps:
        i += 1
        seq.append(i)
        r = steps - i
        if (0 < r and r + jump <= steps and r % jump == 0 and steps - r <= until * steps
                and done.get(r, 0) < resample - 1):
            done[r] = done.get(r, 0) + 1
            seq.extend(range(i - 1, i - jump - 1, -1))
            i -= jump
    return seq


def network_calls(schedule: list[int]) -> int:
    """Network evaluations of a schedule: one per step down."""
    return sum(b > a for a, b in zip(schedule, schedule[1:]))


def _check_eta(eta) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
        raise NeurodiffError(f"--eta: expected a number in [0, 1], got {eta}")


def repaint(D, known: torch.Tensor, mask: torch.Tensor, sigmas: torch.Tensor, schedule: list[int],
            generators: list, init_scale: float = 1.0, callback=None, eta: float = 1.0,
            order: int = 1, start: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """RePaint in the sigma parametrisation (x = x0 + sigma * n) shared by EDM and VP models.

    ``known`` [N, C, *S] normalised (ignored where masked); ``mask`` [N, 1 or C, *S] bool, True = fill, or float in
    [0, 1]: the fraction of the schedule, counted back from its clean end, for which a pixel is filled (1 = True;
    0 = known; between: known, noised, until then -- a soft edge, as a tile's feathered band is).
    ``eta``: fresh noise of the steps down in the mask (1 ancestral, 0 deterministic).
    ``order`` 2 (with ``eta`` 0): a run of steps down is DPM-Solver++(2M) in the mask (the x0 estimate of the step
    before enters; the first step after a jump is first order), no extra network call.
    ``callback(step, x)`` after each step of the schedule; ``start`` = ``(step, x)`` that a callback saw (and the
    generators in the state they had then): continue from there (order 1), as tasks/repaint_state.py does.
    Returns [N, C, *S] float32 with the known pixels equal to ``known``.
    """
    _check_eta(eta)
    if order not in (1, 2) or (order == 2 and eta != 0):
        raise NeurodiffError(f"order {order}: expected 1, or 2 with eta 0 (got eta {eta})")
    if start is not None and order != 1:
        raise NeurodiffError("order 2 cannot continue a stopped repaint (its previous step is not saved); use order 1")
    k = known.to(torch.float64)
    free = _release(mask, len(sigmas) - 1)                   # step index -> the pixels filled from there
    mask = free(len(sigmas) - 1)
    s0 = sigmas[schedule[0]]
    if start is None:
        begin, x = 0, torch.where(free(schedule[0]), randn_like(k, generators) * s0 * init_scale,
                                  k + s0 * randn_like(k, generators))
    else:
        begin, x = start[0] + 1, start[1].to(k)
    prev = None                                               # (x0, h) of the step down before, for order 2
    for step, (a, b) in enumerate(zip(schedule, schedule[1:])):
        if step < begin:
            continue
        sa, sb = sigmas[a], sigmas[b]
        if b > a:                                             # down: the model fills, the known part is re-noised
            x0 = _D(D, x, sa)
            if sb == 0:
                fill = x0
            elif order == 2:
                randn_like(x, generators)                     # drawn as in order 1: the same noise elsewhere
                h = (sa / sb).log()
                d = x0 if prev is None else x0 + (x0 - prev[0]) * h / (2 * prev[1])    # r = h_prev / h
                fill = (sb / sa) * x - torch.expm1(-h) * d
                prev = (x0, h)
            else:
                fill = ancestral_step(x, x0, sa, sb, randn_like(x, generators), eta)
            x = torch.where(free(b), fill, k if sb == 0 else k + sb * randn_like(k, generators))
        else:                                                 # up: forward diffusion from sa to sb > sa
            prev = None
            x = x + (sb ** 2 - sa ** 2).sqrt() * randn_like(x, generators)
        if callback:
            callback(step, x)
    return torch.where(mask, x, k).float()


def _release(mask: torch.Tensor, n: int):
    """``repaint``'s ``mask`` -> (index b of a schedule of n + 1 sigmas -> the bool mask of the pixels filled at b)."""
    if mask.dtype == torch.bool:
        return lambda b: mask
    if mask.numel() and (mask.isnan().any() or mask.min() < 0 or mask.max() > 1):
        raise NeurodiffError("a soft mask: expected values in [0, 1] (1 = fill, 0 = known)")
    first = torch.where(mask > 0, ((1 - mask.to(torch.float64)) * n).ceil(), n + 1)   # the first index filled
    return lambda b: first <= b


def _commit_area(region: tuple[slice, ...], spatial, margin: int) -> tuple[slice, ...]:
    """The part of a tile it writes: the tile less ``margin`` on every side that is not an image border."""
    return tuple(slice(r.start + (margin if r.start > 0 else 0), r.stop - (margin if r.stop < n else 0))
                 for r, n in zip(region, spatial))


def _pad(x: torch.Tensor, m: torch.Tensor, factor: int):
    """Pad [1, C, *S] to multiples of ``factor`` (reflect; padded pixels count as known)."""
    x, crop = pad_to_multiple(x, factor)
    return x, (m if crop is None else pad_to_multiple(m, factor, value=False)[0]), crop


def _check_inputs(model, image, mask_shape, channels: int) -> None:
    """One-line errors for an image [C, *S] (numpy or lazy) and mask the model cannot inpaint."""
    cfg, spatial = model.cfg, tuple(image.shape[1:])
    if len(spatial) != cfg.model.dims:
        raise NeurodiffError(f"the image is {len(spatial)}D ({list(image.shape)}), the model is {cfg.model.dims}D")
    if image.shape[0] != channels:
        raise NeurodiffError(f"the image has {image.shape[0]} channel(s), the model takes {channels}")
    if cfg.model.cond_image_channels:
        raise NeurodiffError(f"{getattr(model, 'source', 'the model')}: takes a conditioning image (context slices or "
                             "a low-res input); inpainting needs an image-only model")
    if tuple(mask_shape) != spatial:
        raise NeurodiffError(f"mask shape {list(mask_shape)} does not match the image's {list(spatial)}")
    if np.dtype(image.dtype) == bool:
        raise NeurodiffError("the image is boolean (a mask?); expected grey levels or colours to inpaint")
    if isinstance(image, np.ndarray) and not np.isfinite(image).all():
        raise ImageValuesError("the image holds NaN or Inf values; mask them and set them to a finite value first")


def check_image(model, image, mask_shape, codec=None):
    """One-line errors for an image [C, *S] (numpy or lazy) and mask shape that ``model`` cannot inpaint; returns
    the codec it inpaints with (``codec``, or the model's own: a latent model's autoencoder, else Identity)."""
    from neurodiff.codec import Identity

    codec = codec if codec is not None else getattr(model, "codec", Identity())
    if model.cfg.data.meta.get("latent") and isinstance(codec, Identity):
        raise NeurodiffError("a latent model: give its autoencoder (codec=) to inpaint")
    latent = not isinstance(codec, Identity)
    _check_inputs(model, image, mask_shape, codec.ae.in_channels if latent else model.cfg.model.in_channels)
    return codec


def _device(model, device):
    """``device``, else where the model's weights are (the CPU for a net without parameters)."""
    return device if device is not None else next(model.net.parameters(), torch.empty(0)).device


def repaint_plan(cfg, steps: int, jump: int, resample: int, jump_until: float, eta: float):
    """(normaliser, preconditioning, sigmas float64, jump schedule, scale of the initial noise) of a RePaint run."""
    jump_schedule(steps, jump, resample, jump_until)          # one-line errors for the settings first
    _check_eta(eta)
    precond, d = make_precond(cfg.diffusion), cfg.diffusion
    sigmas = sampling_sigmas(precond, steps, d.sigma_min, d.sigma_max, d.rho).to(torch.float64)
    schedule = jump_schedule(len(sigmas) - 1, jump, resample, jump_until)
    init = float((1 + sigmas[0] ** 2).sqrt() / sigmas[0]) if getattr(precond, "sigma_table", None) is not None else 1.0
    return Normalizer(**cfg.data.meta["normalizer"]), precond, sigmas, schedule, init


@torch.no_grad()
def inpaint_batch(model, image: np.ndarray, masks: np.ndarray, seeds: list[int], *, steps: int = 250,
                  jump: int = 10, resample: int = 10, jump_until: float = 1.0, eta: float = 1.0, device=None,
                  precision: str = "auto", state=None) -> tuple[np.ndarray, dict]:
    """Repaint one image [C, *S] under N masks [N, *S] (True = fill) in one batch, the whole image as one tile
    -> ([N, C, *S] in the image's dtype, info as ``inpaint_array``'s); ``image`` may also be [N, C, *S], one image
    per mask (of one shape). Pixel-space models; N times the memory of one. The RePaint arithmetic and the noise
    stay on ``device`` (one generator per mask there, so a repaint does not depend on the rest of the batch): on a
    CPU repaint k equals ``inpaint_array(..., seed=seeds[k], tile=0)`` up to the batched network's rounding; on a
    GPU it draws other (CUDA) noise. ``state``: a folder the running batch is saved to every minute and when it
    ends, and continued from by a later call with the same inputs (tasks/repaint_state.py); the caller clears it
    once it has kept the results."""
    cfg = model.cfg
    if cfg.data.meta.get("latent"):
        raise NeurodiffError("batched repaints: pixel-space models only; a latent model repaints one mask at a time")
    per_mask = image.ndim == masks.ndim + 1
    if (masks.ndim != image.ndim and not per_mask) or len(seeds) != len(masks) or \
            (per_mask and len(image) != len(masks)):
        raise NeurodiffError(f"masks {list(masks.shape)} and {len(seeds)} seeds: expected [N, *S] masks for an image "
                             f"{list(image.shape)} ([C, *S], or [N, C, *S]: one per mask) and one seed per mask")
    _check_inputs(model, image[0] if per_mask else image, masks.shape[1:], cfg.model.in_channels)
    device = _device(model, device)
    norm, precond, sigmas, schedule, init = repaint_plan(cfg, steps, jump, resample, jump_until, eta)
    n = len(masks)
    image = image if per_mask else image[None]
    if per_mask and not np.isfinite(image).all():
        raise ImageValuesError("the images hold NaN or Inf values; mask them and set them to a finite value first")
    known = torch.from_numpy(norm.normalize(image)).expand(n, *image.shape[1:])
    x, m, crop = _pad(known, torch.from_numpy(masks.astype(bool))[:, None], 2 ** (len(cfg.model.channel_mult) - 1))
    D = build_denoiser(model.net, precond, make_cond(cfg, [None] * n, None, device), n, 1.0, False, list(x.shape[1:]))
    gens = [torch.Generator(device).manual_seed(sample_seed(s, 0)) for s in seeds]
    run = _state(state, run_key(model, device, precision) if state is not None else None, torch.where(m, 0, x), m,
                 seeds, sigmas, schedule, init, eta)
    start = run.load(gens) if run else None
    with sampling_autocast(precision, device):
        y = repaint(lambda a, s: D(a.float(), s).float(), x.to(device), m.to(device), sigmas, schedule,
                    gens, init, eta=eta, callback=run.saver(gens, len(schedule) - 2) if run else None,
                    start=start).cpu()
    y = y if crop is None else y[(slice(None), slice(None), *crop)]
    values = np.stack([norm.denormalize(v, np.dtype(image.dtype).name) for v in y])
    return np.where(masks[:, None].astype(bool), values, image), {
        "tiles": 1, "tiles_total": 1, "tile_px": 0, "overlap_px": 0, "network_calls_per_tile": network_calls(schedule),
        "tiles_blind": int(np.asarray(masks, bool).reshape(n, -1).all(1).sum()),     # here: masks filling everything
        "resumed_at_step": run.resumed_at if run else None, "seconds_before": run.seconds_before if run else 0.0}


def _state(folder, base: str | None, *inputs) -> RepaintState | None:
    """The ``RepaintState`` in ``folder`` (None: none) of a repaint keyed by ``base`` (``run_key``) and ``inputs``."""
    return None if folder is None else RepaintState(folder, state_key(base, *inputs))


@torch.no_grad()
def inpaint_array(model, image: np.ndarray, mask: np.ndarray, *, steps: int = 250, jump: int = 10,
                  resample: int = 10, jump_until: float = 1.0, eta: float = 1.0, tile: int | None = None,
                  overlap: int | None = None, label: int | None = None, scalars: list[float] | None = None,
                  guidance: float = 1.0, seed: int = 0, device=None,
                  progress: bool = False, out=None, codec=None, precision: str = "auto", start: int = 0,
                  on_tile=None, state=None, feather: int | None = None) -> tuple[np.ndarray, dict]:
    """Fill ``mask`` (True = fill, spatial shape of ``image`` [C, *S] in data units) -> (image, info).

    ``image`` may be a lazy array (zarr, or a TIFF view of data/tiffio.py) when ``out`` is a writable one holding a
    copy of it, and ``mask`` a ``RegionMask``: tiles are then read and written one at a time, the mask one band of
    tiles at a time, and memory does not grow with the image. ``codec``: a latent model's autoencoder
    (default: the one it was trained with). ``precision``: the network's, see ``sampling_autocast`` (the RePaint
    arithmetic itself stays float64). ``device``: the network's (default: where the model's weights are).
    ``start``: tiles to sample that a stopped run already wrote into ``out`` (skipped; each tile's noise is keyed to
    its index, so the result is the uninterrupted run's); ``on_tile(n)`` is called after the n-th tile is written.
    ``state``: a folder the tile being sampled is saved to every minute, and continued from by a run that reaches
    the same tile with the same inputs (tasks/repaint_state.py). With ``on_tile`` (which records the tile) a
    tile's state is deleted once it is recorded; without, each tile's final state is saved too, and the caller
    clears the folder once it has kept the result. ``feather``: px of the neighbours' fills a tile refills softly
    (``_tile_fill``; default and most: overlap // 2; 0: none, a tile's fill meets theirs at a hard line).
    """
    from neurodiff.codec import Identity

    cfg = model.cfg
    spatial = tuple(image.shape[1:])
    codec = check_image(model, image, mask.shape, codec)
    latent = not isinstance(codec, Identity)
    lazy = not isinstance(image, np.ndarray)
    device = _device(model, device)
    autocast = sampling_autocast(precision, device)
    norm, precond, sigmas, schedule, init = repaint_plan(cfg, steps, jump, resample, jump_until, eta)
    factor = 2 ** (len(cfg.model.channel_mult) - 1) * codec.factor
    tile, overlap = tile_settings(model, tile, overlap, codec, square_side(mask) if tile == "auto" else 0)
    feather = overlap // 2 if feather is None else feather
    if isinstance(feather, bool) or not isinstance(feather, int) or not 0 <= feather <= overlap // 2:
        raise NeurodiffError(f"feather {feather}: expected an integer in [0, overlap // 2 = {overlap // 2}]")
    whole = not tile or all(n <= tile for n in spatial)
    # per axis: the tiles' intervals and the parts of them each tile writes (the tile less overlap // 2 inside)
    spans = [[slice(0, n)] for n in spatial] if whole else axis_spans(list(spatial), tile, overlap)
    areas = [[_commit_area((r,), (n,), overlap // 2)[0] for r in rs] for rs, n in zip(spans, spatial)]
    out = image.copy() if out is None else out
    dtype = np.dtype(image.dtype).name
    tiles, filled, blind = _tiles_to_sample(mask, spatial, spans, areas)
    cond = make_cond(cfg, [label], [scalars] if scalars is not None else None, device)
    base = run_key(model, device, precision, codec) if state is not None else None   # once, for every tile
    bar, resumed, spent = None, None, 0.0
    if progress:
        from tqdm import tqdm
        if blind and not whole:       # before any work (README 'Tiles inside a hole': more nuclei on real H&E)
            print(f"note: {blind} of the {len(tiles)} tiles to sample lie wholly in the mask, seeing nothing of the "
                  f"image: their fill follows only the model and earlier tiles; --tile auto avoids them if a tile up "
                  f"to 4x the training size (3D: 2x) holds the holes (README: 'Tiles inside a hole')", file=sys.stderr)
        bar = tqdm(total=len(tiles), initial=start, desc="inpainting", unit="tile")
    for j, k in enumerate(tiles):
        if j < start:                 # written by the stopped run: what it filled counts as known now
            continue
        region, fill, commit = _tile_fill(mask, k, spans, areas, feather)
        run, kept = None, f"tile-{k}-read" if state is not None and on_tile and fill.dtype != bool else None
        if commit.any():
            # a feathered tile rewrites pixels it reads: a run stopped after writing it, before recording it, would
            # read its own output again, so what it read is kept until the tile is recorded
            if kept and j == start and (old := kept_region(state, kept)) is not None:
                out[(slice(None), *region)] = old
            view = np.asarray(out[(slice(None), *region)])
            if kept:
                keep_region(state, kept, view)
            if lazy and not np.isfinite(view).all():   # numpy images were checked whole above
                raise ImageValuesError(f"the image holds NaN or Inf values in {[(r.start, r.stop) for r in region]}; "
                                       "mask them and set them to a finite value first")
            known = torch.from_numpy(norm.normalize(view))[None]
            x, m, crop = _pad(known, torch.from_numpy(fill)[None, None], factor)
            if latent:      # known latents from the encoder; a latent voxel is filled if any of its pixels is
                x = codec.encode(x.float().to(device)).cpu()
                m = getattr(torch.nn.functional, f"max_pool{m.ndim - 2}d")(m.to(torch.float64), codec.factor)
                m = m.bool() if fill.dtype == bool else m
            D = build_denoiser(model.net, precond, cond, 1, guidance, True, list(x.shape[1:]))
            gen = [torch.Generator().manual_seed(sample_seed(seed, k))]
            # keyed by the known part as sampled (a latent tile's encoding: an encoder that is not bit-reproducible
            # on a GPU makes a resumed tile start again, never continue the wrong one)
            run = _state(state, base, torch.where(m >= 1, 0, x), m, seed, k, label, scalars, guidance, sigmas,
                         schedule, init, eta)
            begin = run.load(gen) if run else None
            if begin is not None:
                resumed, spent = (k, begin[0]), spent + run.seconds_before
            with autocast:
                y = repaint(lambda a, s: D(a.float().to(device), s.to(device)).float().cpu(), x, m, sigmas,
                            schedule, gen, init, eta=eta, start=begin,
                            callback=run.saver(gen, None if on_tile else len(schedule) - 2) if run else None)
            if latent:
                y = codec.decode(y.to(device)).float().clamp(-1, 1).cpu()
            y = y if crop is None else y[(slice(None), slice(None), *crop)]
            values = norm.denormalize(y[0], dtype)
            view[:, commit] = values[:, commit]
            out[(slice(None), *region)] = view
        if on_tile:
            on_tile(j + 1)
        if run and on_tile:
            run.finish()              # the tile is written and recorded: its saved state is no longer needed
        if kept:
            drop_region(state, kept)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return out, {"tiles": len(tiles), "tiles_total": int(np.prod([len(a) for a in areas])),
                 "network_calls_per_tile": network_calls(schedule),
                 "fraction_filled": filled / float(np.prod(spatial)),
                 "schedule_steps": len(schedule) - 1, "resumed_tile_step": resumed, "seconds_before": spent,
                 "tile_px": 0 if whole else tile, "overlap_px": 0 if whole else overlap, "tiles_blind": blind}


def tile_settings(model, tile: int | str | None, overlap: int | None, codec, side: int = 0) -> tuple[int, int]:
    """(tile, overlap) as ``inpaint_array`` uses them: None = the model's training size (in pixels: a latent model's
    times its codec's factor), "auto" = ``masks.auto_tile`` for a mask of ``SquareScan.side`` ``side``, and
    min(32, tile / 4); one-line errors for values it cannot use."""
    factor = 2 ** (len(model.cfg.model.channel_mult) - 1) * codec.factor
    train = max(model.cfg.data.meta.get("shape", [0, 256])[1:]) * codec.factor
    tile = train if tile is None else auto_tile(train, factor, side, model.cfg.model.dims) if tile == "auto" else tile
    if isinstance(tile, str) or tile < 0 or tile % factor:
        raise NeurodiffError(f"--tile {tile}: expected 0 (the whole image), auto or a positive multiple of {factor} "
                             "(the model's downsampling)")
    overlap = min(32, tile // 4) if overlap is None else overlap
    if tile and not 0 <= overlap < tile:
        raise NeurodiffError(f"--overlap {overlap}: expected 0 <= overlap < tile ({tile})")
    return tile, overlap


def _tiles_to_sample(mask, spatial, spans, areas) -> tuple[list[int], int, int]:
    """(the grid indices of the tiles whose written part holds mask pixels, the number of mask pixels, how many of
    those tiles are all mask: *blind*, nothing of the image known in them), reading the mask one row of tiles at a
    time (the tiles along every axis but the last, the whole last axis), so only that much of it is in memory."""
    counts = [len(a) for a in areas]
    # along each axis the written parts overlap; each pixel is counted in the first part that holds it
    own = [[_first_part(rs, i) for i in range(len(rs))] for rs in areas]
    tiles, filled, blind = [], 0, 0
    for lead in np.ndindex(*counts[:-1]):
        box = tuple(spans[a][i] for a, i in enumerate(lead))
        band = np.asarray(mask[(*box, slice(0, spatial[-1]))], bool)
        written = tuple(_within(areas[a][i], b) for a, (i, b) in enumerate(zip(lead, box)))
        filled += int(band[tuple(_within(own[a][i], b) for a, (i, b) in enumerate(zip(lead, box)))].sum())
        for i, (last, span) in enumerate(zip(areas[-1], spans[-1])):
            if band[(*written, last)].any():
                tiles.append(int(np.ravel_multi_index((*lead, i), counts)))
                blind += bool(band[(..., span)].all())
    return tiles, filled, blind


def _within(part: slice, box: slice) -> slice:
    """Along an axis, ``part`` (inside ``box``) in the coordinates of ``box``."""
    return slice(part.start - box.start, part.stop - box.start)


def _first_part(parts: list[slice], i: int) -> slice:
    """Along an axis, the pixels of tile i's written part that no earlier tile's part holds (the parts' starts and
    stops increase)."""
    return slice(max(parts[i].start, parts[i - 1].stop if i else 0), parts[i].stop)


def _tile_fill(mask, k: int, spans, areas, feather: int = 0) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """Tile ``k``'s (region, the mask pixels in it that no earlier tile in grid order has written, the part of
    those it writes itself): the arrays are [*tile]. A tile writes every mask pixel of its part (``areas``), so the
    earlier tiles' parts are subtracted; only neighbours reach into the tile. ``feather`` > 0: the tile also
    refills the mask pixels that earlier tiles wrote up to ``feather`` px outside what it writes first, softly
    (``repaint``'s float mask, falling linearly from 1 there to 1 / (feather + 1)), and writes them; the fill is
    then a float array."""
    counts = [len(a) for a in areas]
    ix = np.unravel_index(k, counts)
    region = tuple(spans[a][i] for a, i in enumerate(ix))
    fill = np.asarray(mask[region], bool).copy()
    near = [[i for i, c in enumerate(areas[a]) if c.start < region[a].stop and c.stop > region[a].start]
            for a in range(len(areas))]
    for other in itertools.product(*near):
        if np.ravel_multi_index(other, counts) < k:
            fill[tuple(slice(max(areas[a][i].start, r.start) - r.start, min(areas[a][i].stop, r.stop) - r.start)
                       for a, (i, r) in enumerate(zip(other, region)))] = False
    commit = np.zeros_like(fill)
    own = tuple(_within(areas[a][i], r) for a, (i, r) in enumerate(zip(ix, region)))
    commit[own] = fill[own]
    if not feather or not commit.any():
        return region, fill, commit
    # the band: mask pixels earlier tiles wrote, up to ``feather`` px (Chebyshev) outside the box this tile writes
    # first (its part less the earlier parts that reach into it, where tiles are spread to overlap by more)
    first = [(_first_part(areas[a], i).start - r.start, o.stop - 1) for a, (i, r, o) in enumerate(zip(ix, region, own))]
    grids = np.ogrid[tuple(slice(0, n) for n in fill.shape)]
    d = functools.reduce(np.maximum, [np.maximum(np.maximum(lo - g, g - hi), 0) for g, (lo, hi) in zip(grids, first)])
    band = np.asarray(mask[region], bool) & ~fill & (d >= 1) & (d <= feather)
    if not band.any():
        return region, fill, commit
    soft = np.where(band, 1 - d / (feather + 1.0), fill.astype(np.float64))
    return region, soft, commit | band
