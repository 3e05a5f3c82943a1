"""The `neurodiff inpaint` command: read image and mask, RePaint tile by tile, write in the input's format."""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from neurodiff import dist
from neurodiff.data import io
from neurodiff.data.temps import write_text_atomic
from neurodiff.errors import ImageValuesError, NeurodiffError
from neurodiff.tasks.generate import covariate_row, parse_covariates, resolve_label
from neurodiff.tasks.inpaint import check_image, inpaint_array, repaint_plan, tile_settings
from neurodiff.tasks.masks import RegionMask, SquareScan, box_bounds
from neurodiff.tasks.repaint_state import clear

SCAN_PIXELS = 2**24     # the mask is hashed and counted in bands of about this many pixels


def open_image(path, lazy: bool):
    """``(array [C, *S], meta)``: a zarr or TIFF image read region by region when ``lazy``, else whole."""
    fmt = io.format_of(path)
    if lazy and fmt == "zarr":
        from neurodiff.data import zarrio
        return zarrio.open_lazy(path)
    if lazy and fmt == "tiff":
        from neurodiff.data import tiffio
        return tiffio.open_lazy(path)
    return io.read(path)


class OverviewMask:
    """A mask image ``[C, *s]`` drawn on an overview of the image (the image scaled down by one factor, e.g. a
    slide thumbnail), read at the image's size ``[C, *S]`` region by region, by nearest neighbour: pixel ``p`` of
    an axis is the mask's pixel ``floor((p + 0.5) * s / S)`` (centres aligned, as Pillow's and Fiji's scaling)."""

    def __init__(self, mask, spatial: tuple[int, ...]):
        self.mask, self.shape, self.dtype = mask, (mask.shape[0], *spatial), mask.dtype

    def __getitem__(self, key) -> np.ndarray:
        channels, *region = key
        idx = [(2 * np.arange(*r.indices(n), dtype=np.int64) + 1) * k // (2 * n)
               for r, n, k in zip(region, self.shape[1:], self.mask.shape[1:])]
        if any(i.size == 0 for i in idx):
            return np.zeros((len(range(*channels.indices(self.shape[0]))), *[i.size for i in idx]), self.dtype)
        block = np.asarray(self.mask[(channels, *[slice(int(i[0]), int(i[-1]) + 1) for i in idx])])
        return block[(slice(None), *np.ix_(*[i - i[0] for i in idx]))]

    def close(self) -> None:
        if hasattr(self.mask, "close"):       # a lazy TIFF view holds its file open
            self.mask.close()


def overview_factor(mask_spatial, spatial) -> float | None:
    """The factor by which ``spatial`` was scaled down to ``mask_spatial`` (one factor for the plane's two axes and
    any leading axis not kept whole, e.g. a stack's slices each drawn small; each axis within a pixel of it, as
    exports of a thumbnail round it), or None when it is not such an overview (or has another number of axes).
    An overview is at most 2/3 of the image's size (a factor of 1.5 or more) on both axes of the plane: a mask a
    few pixels short of the image is a crop or a mistake, not an overview."""
    if len(mask_spatial) != len(spatial):
        return None
    axis = int(np.argmax(spatial[-2:])) + len(spatial) - 2
    f = spatial[axis] / max(mask_spatial[axis], 1)
    ok = f >= 1.5 and all(1 <= k <= n and (abs(n / f - k) <= 1 or (k == n and a < len(spatial) - 2))
                          for a, (k, n) in enumerate(zip(mask_spatial, spatial)))
    return f if ok else None


def read_mask(path, boxes: list[str], spatial: tuple[int, ...], lazy: bool) -> RegionMask:
    """The mask of ``--mask`` (non-zero in any channel = fill; a zarr or TIFF read region by region when ``lazy``)
    and of the ``--box`` es, checked against the image's size. A mask of the image scaled down by one factor (an
    overview's) is scaled up to it region by region (`OverviewMask`)."""
    m, spatial = None, tuple(spatial)
    bounds = box_bounds(boxes, spatial)
    if path:
        m, _ = open_image(path, lazy)
        mask_spatial = tuple(m.shape[1:])
        if mask_spatial != spatial:
            f = overview_factor(mask_spatial, spatial)
            if f is None:
                if hasattr(m, "close"):             # a lazy TIFF view holds its file open
                    m.close()
                raise NeurodiffError(f"{path}: mask shape {list(mask_spatial)} does not match the image's "
                                     f"{list(spatial)}, nor is it the image scaled down by one factor of 1.5 or "
                                     "more (an overview)")
            print(f"mask {path}: {'x'.join(map(str, mask_spatial))}, scaled up {f:.3g}x to the image's "
                  f"{'x'.join(map(str, spatial))} (nearest neighbour)")
            m = OverviewMask(m, spatial)
    return RegionMask(spatial, m, bounds)


def scan_mask(mask: RegionMask, square: bool = True) -> tuple[str, int, int]:
    """(sha1 of the mask's bits, number of pixels to fill, ``SquareScan.side``: the least tile no tile lies wholly in
    the mask above, or 0 unless ``square``), about ``SCAN_PIXELS`` at a time: bands along the first axis, or, in a volume whose planes are larger
    than that, bands of rows of one plane."""
    digest, n, shape, squares = hashlib.sha1(), 0, mask.shape, SquareScan()
    if np.prod(shape[1:]) <= SCAN_PIXELS:
        step = SCAN_PIXELS // int(np.prod(shape[1:]))
        keys = [(slice(y, y + step),) for y in range(0, shape[0], step)]
    else:
        rows = max(1, SCAN_PIXELS // shape[-1])
        keys = [(*[slice(i, i + 1) for i in lead], slice(y, y + rows))
                for lead in np.ndindex(*shape[:-2]) for y in range(0, shape[-2], rows)]
    for key in keys:
        band = mask[(*key, *[slice(0, k) for k in shape[len(key):]])]
        digest.update(np.packbits(band).tobytes())
        n += int(band.sum())
        if not square:
            continue
        if len(key) < len(shape) - 1:          # whole planes
            for plane in band.reshape(-1, *shape[-2:]):
                squares.rows(plane, True)
        else:                                  # rows of one plane
            squares.rows(band.reshape(-1, shape[-1]), key[-1].start == 0)
    return digest.hexdigest(), n, squares.side


def tiled_output(path) -> bool:
    """Whether ``neurodiff inpaint`` writes ``path`` tile by tile (resumable): a .zarr, or a TIFF when zarr (the
    store of its tiles until the end) is installed."""
    fmt = io.format_of(path)
    if fmt == "tiff":
        import importlib.util
        return importlib.util.find_spec("zarr") is not None
    return fmt == "zarr"


def _blocks(x) -> int:
    """Blocks of 1024^2 pixels (or 1024^3 voxels) in ``x`` [C, *S]: a bar is shown for copies of more than 16."""
    return int(np.prod([-(-n // 1024) for n in x.shape[1:]]))


def _record(out) -> Path:
    """The progress of a resumable run beside its partial output: its settings and the tiles it wrote."""
    from neurodiff.data import zarrio

    part = zarrio.partial_of(out)
    return part.with_name(part.name + ".json")


def _state_folder(out) -> Path:
    """The tile in progress of a resumable run, saved every minute (tasks/repaint_state.py)."""
    return _record(out).with_suffix(".repaint")


def _partial_output(args, image, meta, settings: dict):
    """The .zarr output, written tile by tile into a hidden folder beside --out (moved there at the end): a new
    one holding a copy of the image, or with --resume the one a stopped run with the same settings left. Returns
    (array, tiles already written, the callback that records each tile written)."""
    from neurodiff.data import zarrio

    part, record = zarrio.partial_of(args.out), _record(args.out)
    old = json.loads(record.read_text()) if part.exists() and record.exists() else None
    done, busy = (old["tiles_done"] if old else 0), any(_state_folder(args.out).glob("*.pt"))
    if part.exists() and not done and not busy and not (args.resume and old):   # nothing to keep
        shutil.rmtree(part)
    if args.resume:
        if not part.exists() or old is None:
            raise NeurodiffError(f"--resume: no stopped run to continue ({part} not found); run without --resume")
        for k, v in settings.items():
            if old["settings"].get(k) != v:
                raise NeurodiffError(f"--resume: the stopped run in {part} had {k}={old['settings'].get(k)!r}, not "
                                     f"{v!r}; give its settings, or delete that folder to start again")
        out, start = zarrio.open_partial(args.out), int(old["tiles_done"])
    elif part.exists():
        raise NeurodiffError(f"{args.out}: a stopped run left {part} with {done} tile(s) written"
                             f"{' and one in progress' if busy else ''}; add --resume to continue it, or delete "
                             "that folder to start again")
    else:
        clear(_state_folder(args.out))
        out, start = zarrio.create(args.out, image.shape, image.dtype, meta, partial=True), 0
        zarrio.copy_regions(image, out, progress=not args.no_progress and _blocks(image) > 16)

    def on_tile(n: int) -> None:     # after the tile's pixels are written (zarr writes chunks atomically)
        write_text_atomic(record, json.dumps({"settings": settings, "tiles_done": n}))

    on_tile(start)
    return out, start, on_tile


def run_inpaint(args, load_model) -> dict:
    """``args`` from the CLI parser; ``load_model(path)`` -> LoadedModel (passed in: tasks sit below train)."""
    t0 = time.perf_counter()
    io.writable_format(args.out)        # before any work
    model = load_model(args.model, dist.init())   # the GPU when there is one
    tiled_out = tiled_output(args.out)   # written tile by tile as the tiles are done: resumable
    if args.resume and not tiled_out:
        raise NeurodiffError(f"--resume: needs a .zarr or .tif --out (written tile by tile, so a stopped run keeps "
                             f"its tiles; a .tif needs pip install zarr); {args.out} is written once at the end")
    image, meta = open_image(args.image, tiled_out)     # a zarr or TIFF image: never whole in memory
    mask = None
    try:
        mask = read_mask(args.mask, args.box, tuple(image.shape[1:]), tiled_out)
        try:                                                 # all of it before any copy of a large image
            codec = check_image(model, image, mask.shape)
        except NeurodiffError as exc:
            raise NeurodiffError(f"{args.image}: {exc}") from None
        io.check_writable(args.out, image.shape, image.dtype, meta)
        repaint_plan(model.cfg, args.steps, args.jump, args.resample, args.jump_until, args.eta)
        if args.tile != "auto":
            tile_settings(model, args.tile, args.overlap, codec)      # its errors before the mask is scanned
        scan = scan_mask(mask, square=args.tile == "auto")   # a row-by-row pass over the mask: only for auto
        if not scan[1]:
            raise NeurodiffError(f"{args.mask or '--box'}: the mask is empty (non-zero = fill); nothing to do")
        auto = args.tile == "auto"        # the resolved tile and overlap are what --resume records
        args.tile, args.overlap = tile_settings(model, args.tile, args.overlap, codec, scan[2])
        if auto:
            capped = " (capped: at most 4x the training size, 2x in 3D)" if args.tile <= scan[2] else ""
            print(f"--tile auto: {args.tile} px{capped}; a tile of {scan[2]} px could lie wholly in the mask")
        return _inpaint(args, model, image, meta, mask, scan, tiled_out, t0)
    finally:                                               # lazy TIFF views hold their files open
        for x in (image, getattr(mask, "image", None)):
            if hasattr(x, "close"):
                x.close()


def _inpaint(args, model, image, meta, mask, scan, tiled_out: bool, t0: float) -> dict:
    spatial, mask_sha1 = tuple(image.shape[1:]), scan[0]
    cfg = model.cfg
    label = resolve_label(cfg, args.label)
    guidance = args.guidance if args.guidance is not None else cfg.sample.guidance
    scalars = covariate_row(cfg, parse_covariates(args.covariate))
    out, start, on_tile = None, 0, None
    if tiled_out:
        settings = {"image": str(Path(args.image).resolve()), "shape": list(image.shape),
                    "dtype": np.dtype(image.dtype).name, "model": model.digest,
                    "mask_sha1": mask_sha1, "label": label,
                    "scalars": scalars, "guidance": guidance, **{k: getattr(args, k) for k in (
                        "steps", "jump", "resample", "jump_until", "eta", "tile", "overlap", "seed", "precision")},
                    "feather": args.overlap // 2}     # inpaint_array's default, recorded: it changes the fill
        out, start, on_tile = _partial_output(args, image, meta, json.loads(json.dumps(settings)))
    try:
        out, info = inpaint_array(model, image, mask, steps=args.steps, jump=args.jump, resample=args.resample,
                                  jump_until=args.jump_until, eta=args.eta, tile=args.tile, overlap=args.overlap,
                                  label=label, scalars=scalars, guidance=guidance, seed=args.seed,
                                  progress=not args.no_progress, out=out, precision=args.precision, start=start,
                                  on_tile=on_tile, state=_state_folder(args.out) if tiled_out else None)
    except ImageValuesError as exc:     # only a lazily read (tiled) image is checked tile by tile: name its file
        from neurodiff.data import zarrio    # the stopped run's copy holds the NaNs too: it cannot be resumed

        again = f", then delete {zarrio.partial_of(args.out)} and run again"
        raise ImageValuesError(f"{args.image}: {exc}{again}") from None
    if tiled_out:
        from neurodiff.data import tiffio, zarrio

        if io.format_of(args.out) == "tiff":          # streamed from the tiles' store, then the store removed
            tiffio.write_from(args.out, out, meta, progress=not args.no_progress and _blocks(out) > 16)
            shutil.rmtree(zarrio.partial_of(args.out))
        else:
            zarrio.commit(args.out, partial=True)
        _record(args.out).unlink(missing_ok=True)
        clear(_state_folder(args.out))
    else:
        io.write(args.out, out, meta)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info.update(seconds=time.perf_counter() - t0, peak_rss_mib=peak, tiles_resumed=start)
    note = [f"{start} written by the stopped run"] if start else []
    note += [f"{info['tiles_blind']} wholly in the mask"] if info["tiles_blind"] else []
    if info["resumed_tile_step"]:
        note.append(f"tile {start + 1} went on after {info['resumed_tile_step'][1] + 1} of its "
                    f"{info['schedule_steps']} schedule steps")
    note = "; ".join(note)
    print(f"filled {info['fraction_filled']:.1%} of {'x'.join(map(str, spatial))} in {info['tiles']} of "
          f"{info['tiles_total']} tiles{f' ({note})' if note else ''}, "
          f"{info['network_calls_per_tile']} network calls each; wrote {Path(args.out)} "
          f"in {info['seconds']:.0f} s (peak memory {peak:.0f} MiB)")
    return info
