"""Zarr images (a folder ending in ``.zarr``) <-> ``[C, *S]`` arrays, whole or region by region.

Gigapixel sections do not fit in memory as numpy arrays; ``open_lazy`` returns an array-like that reads only the
regions asked for, and ``create`` a writable one that is written region by region into a hidden folder and moved
into place by ``commit`` (atomic, like every neurodiff output). Reads plain zarr arrays ([C, *S] or [H, W]) and
OME-Zarr images (the full-resolution level ``0``); writes a plain array with its spacing, unit and channel names
in the attributes. zarr is imported inside the functions (an optional dependency).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np

from neurodiff.errors import NeurodiffError


def _err(path, msg: str) -> NeurodiffError:
    return NeurodiffError(f"{path}: {msg}")


def _zarr(path):
    try:
        import zarr
    except ImportError as exc:
        raise _err(path, "reading or writing .zarr needs the zarr package (pip install zarr)") from exc
    return zarr


class _AddChannel:
    """A lazy [H, W] (or [D, H, W]) array seen as [1, *S]."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim = a, (1, *a.shape), np.dtype(a.dtype), a.ndim + 1

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.a[key[1:]])[None]


def open_lazy(path, max_voxels: int = 2**40):
    """``(array-like [C, *S], ImageMeta)`` of a zarr image; nothing is read until it is indexed."""
    from neurodiff.data.io import ImageMeta

    zarr, p = _zarr(path), Path(path)
    if not p.is_dir():
        raise _err(path, "no such zarr folder" if not p.exists() else "a .zarr image must be a folder")
    try:
        node = zarr.open(store=str(p), mode="r")
    except Exception as exc:
        raise _err(path, f"cannot read ZARR ({' '.join(str(exc).split())[:300]})") from exc
    attrs, scale = dict(node.attrs), None
    if not hasattr(node, "shape"):                              # a group: OME-Zarr's full-resolution level
        try:
            ds = attrs.get("ome", attrs)["multiscales"][0]["datasets"][0]
        except (KeyError, IndexError, TypeError):
            ds = {}
        level = str(ds.get("path", "0")) if isinstance(ds, dict) else "0"     # "0", or e.g. "s0", "scale0"
        if level not in node:
            raise _err(path, f"a zarr group without an array '{level}'; expected a zarr array or an OME-Zarr image")
        try:
            scale = next(t["scale"] for t in ds["coordinateTransformations"] if t["type"] == "scale")
        except (KeyError, IndexError, TypeError, StopIteration):
            scale = None
        node = node[level]
        attrs = {**attrs, **dict(node.attrs)}
    shape = tuple(int(s) for s in node.shape)
    ome5 = len(shape) == 5
    while len(shape) > 4 and shape[0] == 1:                     # OME-Zarr [t, c, z, y, x] with one time point
        node, shape = _Squeeze(node), shape[1:]
    if ome5 and len(shape) == 4 and shape[1] == 1:              # ... and one plane: a 2D image [c, y, x]
        node, shape = _Squeeze(node, 1), (shape[0], *shape[2:])
    if np.dtype(node.dtype).kind not in "biuf":
        raise _err(path, f"unsupported data type {np.dtype(node.dtype).name} (expected integer or float)")
    if len(shape) not in (2, 3, 4) or 0 in shape or math.prod(shape) > max_voxels:
        raise _err(path, f"array of shape {list(shape)}; expected [H,W], [C,H,W] or [C,D,H,W] with no empty axis")
    x = _AddChannel(node) if len(shape) == 2 else node
    spatial = 2 if len(shape) == 2 else len(shape) - 1
    spacing = attrs.get("spacing") or (scale[-spatial:] if scale else None)
    meta = ImageMeta(format="zarr", dtype=np.dtype(node.dtype).name,
                     spacing=tuple(float(v) for v in spacing) if spacing else None, unit=attrs.get("unit"),
                     channel_names=attrs.get("channel_names"))
    return x, meta


class _Squeeze:
    """A lazy array less its axis ``axis`` of length 1."""

    def __init__(self, a, axis: int = 0):
        self.a, self.axis, self.dtype = a, axis, a.dtype
        self.shape = tuple(n for i, n in enumerate(a.shape) if i != axis)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (len(self.shape) - len(key))
        return np.asarray(self.a[(*key[:self.axis], 0, *key[self.axis:])])

    def __setitem__(self, key, v):
        raise TypeError("read-only")


def read(path):
    """Read a whole zarr image: ``([C, *S] numpy array, ImageMeta)``."""
    x, meta = open_lazy(path, max_voxels=2**34)
    return np.ascontiguousarray(x[(slice(None),) * len(x.shape)]), meta


def _tmp_of(path) -> Path:
    p = Path(path)
    return p.with_name(f".{p.name}.tmp{os.getpid()}")


def partial_of(path) -> Path:
    """The hidden folder a resumable writer (``neurodiff inpaint``) fills beside ``path``: named without the process
    id, so a later process can continue it (``open_partial``) after this one is stopped."""
    p = Path(path)
    return p.with_name(f".{p.name}.partial")


def open_partial(path):
    """The writable zarr array of ``partial_of(path)``."""
    return _zarr(path).open_array(store=str(partial_of(path)), mode="r+")


def create(path, shape, dtype, meta=None, chunk: int = 512, partial: bool = False):
    """A writable zarr array ``[C, *S]`` in a hidden folder beside ``path`` (``partial_of(path)`` when
    ``partial``); ``commit(path, partial)`` moves it there."""
    zarr, tmp = _zarr(path), partial_of(path) if partial else _tmp_of(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    chunks = (1, *[min(chunk if len(shape) == 3 else 128, n) for n in shape[1:]])
    try:
        z = zarr.create_array(store=str(tmp), shape=tuple(shape), chunks=chunks, dtype=np.dtype(dtype))
    except Exception as exc:
        raise _err(path, f"cannot write ZARR ({' '.join(str(exc).split())[:300]})") from exc
    axes = ["c", "y", "x"] if len(shape) == 3 else ["c", "z", "y", "x"]
    z.attrs.update({"axes": axes, **({"spacing": list(meta.spacing)} if meta and meta.spacing else {}),
                    **({"unit": meta.unit} if meta and meta.unit else {}),
                    **({"channel_names": list(meta.channel_names)} if meta and meta.channel_names else {})})
    return z


def commit(path, partial: bool = False) -> None:
    """Move the folder written by ``create`` to ``path`` (replacing an older one)."""
    p, tmp = Path(path), partial_of(path) if partial else _tmp_of(path)
    if p.exists():
        old = p.with_name(f".{p.name}.old{os.getpid()}")
        os.replace(p, old)
        os.replace(tmp, p)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, p)


def write(path, x: np.ndarray, meta=None) -> None:
    """Write a whole ``[C, *S]`` array as a zarr image, atomically."""
    z = create(path, x.shape, x.dtype, meta)
    try:
        z[...] = x
    except BaseException:
        shutil.rmtree(_tmp_of(path), ignore_errors=True)
        raise
    commit(path)


def copy_regions(src, dst, step: int | None = None, progress: bool = False) -> None:
    """Copy a lazy ``[C, *S]`` array into another one block by block (memory of one block: ``step`` pixels per
    axis, default 1024 in 2D, 256 in 3D); ``progress``: a bar counting the blocks."""
    spatial = src.shape[1:]
    step = step or (1024 if len(spatial) == 2 else 256)
    blocks = list(np.ndindex(*[math.ceil(n / step) for n in spatial]))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(blocks), desc="copying the image", unit="block")
    for start in blocks:
        key = (slice(None), *[slice(s * step, min((s + 1) * step, n)) for s, n in zip(start, spatial)])
        dst[key] = np.asarray(src[key])
        if bar:
            bar.update(1)
    if bar:
        bar.close()
