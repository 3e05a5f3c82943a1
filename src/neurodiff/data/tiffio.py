"""TIFF images region by region, for sections larger than memory.

``open_lazy`` returns an array-like ``[C, *S]`` (the axes ``io.read`` gives) that reads only the regions asked
for: uncompressed contiguous data (ImageJ and most microscope TIFFs, neurodiff's own) through a read-only memory
map opened for each region, tiled or stripped data through tifffile's zarr view of its chunks. A file whose
layout allows neither (one compressed strip holding a whole large image) is read whole. ``write_from`` writes a
lazy ``[C, *S]`` array into a TIFF block by block (bands of rows, cut in columns where a band of whole source
chunks would exceed ``BAND_BYTES``), in the layout and metadata ``io.write`` uses,
atomically. That layout (``tiff_layout`` for reading, ``tiff_plan`` / ``tiff_data`` for writing) lives here and
serves ``io.read`` / ``io.write`` too. tifffile and zarr are imported inside the functions.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurodiff.data import io
from neurodiff.errors import NeurodiffError

MAX_CHUNK_BYTES = 64 * 2**20   # a chunk larger than this is no use for reading regions: the file is read whole
BAND_BYTES = 64 * 2**20        # what write_from holds at a time (at least one source chunk per plane)


@dataclass
class TiffLayout:
    """How a TIFF's first series becomes ``[C, *S]``: its ``axes`` and ``shape``; the axes kept (``keep``: not of
    length 1, or Y/X), their ``order`` (channels, depth, Y, X: indices into the kept axes), how many of them are
    channel axes (merged into one C), whether an RGBA alpha is dropped, and the metadata."""
    axes: str
    shape: tuple
    keep: list
    order: list
    n_chan: int
    colours: int       # samples per pixel kept when trailing ones are alpha (RGBA, grey + alpha), else 0: all
    meta: io.ImageMeta


def tiff_layout(tif, path) -> TiffLayout:
    """The ``TiffLayout`` of an open ``tifffile.TiffFile`` (one-line error for axes neurodiff cannot map)."""
    series = tif.series[0]
    axes, shape = series.axes, tuple(series.shape)
    page = series.keyframe
    ij = tif.imagej_metadata or {}
    shaped = (tif.shaped_metadata or [{}])[0] or {}
    tags = page.tags
    xres, yres = (tags[k].value if k in tags else None for k in ("XResolution", "YResolution"))
    resunit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    rgb = int(getattr(page, "photometric", 0)) == 2
    samples = shape[axes.index("S")] if "S" in axes else 1
    extra = list(getattr(page, "extrasamples", ()) or ())
    alpha = next((i for i, e in enumerate(reversed(extra)) if int(e) not in (1, 2)), len(extra))   # trailing
    alpha = alpha or int(rgb and samples == 4)            # RGBA written without its ExtraSamples tag
    colours = samples - alpha if "S" in axes and 0 < alpha < samples else 0
    keep = [i for i, a in enumerate(axes) if shape[i] > 1 or a in "YX"]
    ax = "".join(axes[i] for i in keep)
    chan = [a for a in ax if a in "CS"]
    depth = [a for a in ax if a not in "CSYX"]
    if "Y" not in ax or "X" not in ax or len(depth) > 1:
        raise io._err(path, f"TIFF has axes {axes} with shape {shape}; expected channels, at most "
                         "one Z/T axis, then Y, X")
    order = [ax.index(a) for a in chan + depth + ["Y", "X"]]

    unit = io._norm_unit(ij.get("unit") or shaped.get("unit"))
    z = ij.get("spacing", shaped.get("spacing"))
    spacing = None
    if xres and yres and xres[0] and yres[0] and (resunit != 1 or tuple(xres) != (1, 1) or unit or z):
        yx = [r[1] / r[0] for r in (yres, xres)]  # tag is pixels per unit
        if resunit in (2, 3):  # inch / cm: physical, convert to the stated unit or mm
            scale = 25.4 if resunit == 2 else 10.0
            to = unit if unit in io._UNIT_MM else "mm"
            yx, unit = [s * scale / io._UNIT_MM[to] for s in yx], to
        spacing = tuple(float(s) for s in yx)
    mpp = re.search(r"\|\s*MPP\s*=\s*([0-9]*\.?[0-9]+)", page.description or "") if tif.is_svs else None
    if spacing is None and mpp and float(mpp.group(1)) > 0:   # Aperio SVS: microns per pixel in the description
        spacing, unit = (float(mpp.group(1)),) * 2, "um"
    if depth and (spacing or z):
        spacing = (float(z or 1.0),) + (spacing or (1.0, 1.0))
    meta = io.ImageMeta("tiff", np.dtype(series.dtype).name, spacing, unit if spacing else None)
    return TiffLayout(axes, shape, keep, order, len(chan), colours, meta)


def tiff_plan(shape, dtype, meta) -> tuple[str, dict]:
    """How a ``[C, *S]`` array of ``shape`` and ``dtype`` is written as TIFF: its layout for ``tiff_data`` and the
    ``tifffile.imwrite`` keywords (ImageJ hyperstack up to 4 GB for uint8/uint16/float32, else BigTIFF)."""
    c, vol = shape[0], len(shape) == 4
    big = math.prod(shape) * np.dtype(dtype).itemsize > io.BIGTIFF_BYTES
    imagej = np.dtype(dtype).name in ("uint8", "uint16", "float32") and not big  # ImageJ: no BigTIFF
    rgb = not vol and c == 3 and np.dtype(dtype) == np.uint8
    unit = io._norm_unit(meta.unit)
    md, kw = {}, {"photometric": "rgb" if rgb else "minisblack", "bigtiff": big}
    if rgb:
        layout, md["axes"] = "rgb", "YXS"
    elif imagej and vol and c > 1:
        layout, md["axes"] = "zc", "ZCYX"  # ImageJ order is TZCYXS
    else:
        layout = "c" if c > 1 else "one"
        md["axes"] = ("C" if c > 1 else "") + ("ZYX" if vol else "YX")
    if meta.spacing is not None:
        sy, sx = meta.spacing[-2:]
        if vol:
            md["spacing"] = float(meta.spacing[0])
        if unit:
            md["unit"] = unit
        if not imagej and unit in io._UNIT_MM:  # plain TIFF: physical cm resolution for other readers
            sy, sx = (s * io._UNIT_MM[unit] / 10.0 for s in (sy, sx))
            kw["resolutionunit"] = "CENTIMETER"
        else:
            kw["resolutionunit"] = "NONE"  # ImageJ reads its unit from the description
        kw["resolution"] = (1.0 / sx, 1.0 / sy)
    return layout, {"imagej": imagej, "metadata": md, **kw}


def tiff_data(x, layout: str):
    """``[C, *S]`` (or any block of it over all channels) in the axis order ``tiff_plan``'s layout writes."""
    return {"rgb": lambda: np.moveaxis(x, 0, -1), "zc": lambda: np.moveaxis(x, 0, 1), "c": lambda: x,
            "one": lambda: x[0]}[layout]()


class _View:
    """``[C, *S]`` regions of a TIFF series whose axes are ``lay.axes``: ``read(key)`` reads a region given as one
    index per original axis."""

    def __init__(self, path, lay, read, dtype):
        self.path, self.lay, self.read = path, lay, read
        kept = [lay.shape[i] for i in lay.keep]
        dims = [kept[i] for i in lay.order]
        chan = lay.colours or (dims[0] if lay.n_chan else 1)
        self.shape = (chan, *dims[lay.n_chan:])
        self.dtype, self.ndim, self.tif = np.dtype(dtype), len(self.shape), None
        ax = "".join(lay.axes[i] for i in lay.keep)     # the kept axes' letters, in [C, *S] order
        self.target = (["C"] if lay.n_chan else []) + [ax[i] for i in lay.order[lay.n_chan:]]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        if not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
            raise TypeError("TIFF regions are read with unit-step slices only")
        lay, want = self.lay, list(key)
        chan = key[0]
        if lay.colours:              # the colour channels, not the alpha after them
            r = range(lay.colours)[chan]
            chan = slice(r.start, r.stop) if len(r) else slice(0, 0)
        by_axis = dict(zip(self.target, ([chan] if lay.n_chan else []) + want[1:]))
        orig = []
        for i, a in enumerate(lay.axes):
            if i not in lay.keep:
                orig.append(0)
            else:
                orig.append(by_axis["C" if a in "CS" else a])
        try:
            x = self.read(tuple(orig))
        except Exception as exc:
            need = "; its compression needs pip install imagecodecs" if "imagecodecs" in str(exc) else ""
            raise NeurodiffError(f"{self.path}: cannot read TIFF region {[(k.start, k.stop) for k in key]}{need} "
                                 f"({' '.join(str(exc).split())[:200]})") from exc
        x = np.asarray(x).transpose(lay.order)
        if not lay.n_chan:
            x = x[None][key[0]]
        return np.ascontiguousarray(x.astype(self.dtype, copy=False))

    def close(self) -> None:
        """Close the file (chunked reads keep it open; the memory-map path opens it per region)."""
        if self.tif is not None:
            self.tif.close()
            self.tif = None


def open_lazy(path):
    """``(array-like [C, *S], ImageMeta)`` of a TIFF; nothing is read until it is indexed (or, for a file whose
    layout cannot be read by region, the whole array as ``io.read`` gives it)."""
    import tifffile

    p = Path(path)
    if not p.is_file():
        raise NeurodiffError(f"{path}: {'is not a regular file' if p.exists() else 'no such file'}")
    try:
        tif = tifffile.TiffFile(p)
    except Exception as exc:
        raise NeurodiffError(f"{path}: cannot read TIFF ({' '.join(str(exc).split())[:200]})") from exc
    try:
        lay = tiff_layout(tif, path)
        series = tif.series[0]
        dtype = np.dtype(series.dtype)
        dtype = np.dtype(dtype.name) if dtype.kind in "biuf" else dtype   # tifffile's 'q' -> int64 (zarr wants it)
        if lay.n_chan > 1 or dtype.kind not in "biuf":    # two channel axes merged, odd types: io.read decides
            read = None
        elif series.dataoffset is not None:          # contiguous, uncompressed: a memory map per region
            disk = dtype.newbyteorder(tif.byteorder)
            shape, offset = tuple(series.shape), int(series.dataoffset)

            def read(key):
                mm = np.memmap(p, dtype=disk, mode="r", offset=offset, shape=shape)
                try:
                    return np.array(mm[key])
                finally:
                    del mm                          # unmapped: the pages read do not stay in this process
        else:
            try:
                read = _chunked(series, dtype)
            except Exception:                       # a layout tifffile's zarr view does not serve: read whole
                read = None
    except NeurodiffError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise NeurodiffError(f"{path}: cannot read TIFF ({' '.join(str(exc).split())[:200]})") from exc
    if read is None:
        tif.close()
        return io.read(path)
    view = _View(path, lay, read, dtype)
    if series.dataoffset is None:
        view.tif = tif                              # the chunked reads need the file open: view.close()
    else:
        tif.close()
    return view, lay.meta


def _chunked(series, dtype):
    """``read(key)`` through tifffile's zarr view of the series' tiles or strips, or None when they are too
    large to read regions by, tifffile's view does not have the series' shape, or zarr is not installed)."""
    try:
        import zarr
    except ImportError:
        return None

    z = zarr.open(series.aszarr(level=0), mode="r")   # the full resolution of a pyramid (whole-slide images)
    if tuple(z.shape) != tuple(series.shape) or math.prod(z.chunks) * dtype.itemsize > MAX_CHUNK_BYTES:
        return None
    return lambda key: z[key]


def _aligned(n: int, chunk, size: int) -> int:
    """``n`` rows (or columns) rounded down to whole source chunks of ``chunk``, at least one chunk (or one row
    when the source is not chunked), at most ``size``."""
    n = max(1, n)
    if chunk:
        n = max(chunk, n // chunk * chunk)
    return min(n, size)


def write_from(path, src, meta, progress: bool = False) -> None:
    """Write the ``[C, *S]`` array-like ``src`` as TIFF at ``path``, block by block, atomically: the same file
    ``io.write(path, np.asarray(src), meta)`` writes, without ``src`` ever being in memory whole. A block is a
    band of rows of at most ``BAND_BYTES``, in whole chunks of ``src`` when it has ``chunks`` (a zarr store);
    where one row of chunks is larger (very wide images) the band is cut in columns, so a block holds at most
    ``BAND_BYTES`` or one chunk per plane. ``progress``: a bar counting the blocks."""
    import tifffile

    io.writable_format(path)
    shape, dtype = tuple(src.shape), np.dtype(src.dtype)
    layout, kw = tiff_plan(shape, dtype, meta)
    full = tiff_data(np.broadcast_to(np.zeros((), dtype), shape), layout).shape
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.stem}.tmp{os.getpid()}{p.suffix}")
    try:
        tifffile.imwrite(tmp, shape=full, dtype=dtype, **kw)   # header, and space for the data
        with tifffile.TiffFile(tmp) as tif:
            offset, disk = int(tif.series[0].dataoffset), dtype.newbyteorder(tif.byteorder)
        h, w = shape[-2:]
        px = dtype.itemsize * (3 if layout == "rgb" else 1)          # bytes of one pixel in a row
        row, planes = w * px, 1 if layout == "rgb" else math.prod(shape[:-2])   # rgb: the channels are in the row
        chunks = getattr(src, "chunks", None) or (None, None)      # whole chunks of the source per block
        band = _aligned(BAND_BYTES // (row * planes), chunks[-2], h)
        cols = _aligned(BAND_BYTES // (band * px * planes), chunks[-1], w)   # wide images: part of a band
        blocks = [(y0, x0) for y0 in range(0, h, band) for x0 in range(0, w, cols)]
        if progress:
            from tqdm import tqdm
            blocks = tqdm(blocks, desc=f"writing {p.name}", unit="block")
        with open(tmp, "r+b") as f:
            for y0, x0 in blocks:
                y1, x1 = min(h, y0 + band), min(w, x0 + cols)
                block = tiff_data(np.asarray(src[(slice(None),) * (len(shape) - 2) + (slice(y0, y1), slice(x0, x1))]),
                                  layout)
                lead = block.shape[:-3] if layout == "rgb" else block.shape[:-2]
                for k, idx in enumerate(np.ndindex(*lead)):
                    data = np.ascontiguousarray(block[idx], dtype=disk)
                    if x1 - x0 == w:                                  # whole rows: one write
                        f.seek(offset + (k * h + y0) * row)
                        f.write(data.tobytes())
                        continue
                    for r in range(y1 - y0):
                        f.seek(offset + (k * h + y0 + r) * row + x0 * px)
                        f.write(data[r].tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, NeurodiffError) or not isinstance(exc, Exception):
            raise
        raise NeurodiffError(f"{path}: cannot write TIFF ({' '.join(str(exc).split())[:200]})") from exc
