"""Read and write image files as channels-first numpy arrays plus metadata.

Arrays are ``[C, *S]`` with 2 (image) or 3 (volume) spatial axes in the file's own order.
Heavy libraries (Pillow, tifffile, nibabel) are imported inside the functions that use them.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurodiff.errors import NeurodiffError

MAX_VOXELS = 2**34  # refuse to allocate more elements than this (absurd or hostile headers)
BIGTIFF_BYTES = 3_900_000_000  # classic TIFF offsets are 32-bit

SUFFIXES = {
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".svs": "tiff",
    ".nii": "nifti", ".nii.gz": "nifti", ".npy": "npy", ".npz": "npz", ".zarr": "zarr",
}
_EXPECTED = ".png, .jpg, .tif, .svs, .nii, .nii.gz, .npy, .npz, .zarr"
_UNIT_MM = {"nm": 1e-6, "um": 1e-3, "mm": 1.0, "cm": 10.0, "m": 1000.0}
_UNIT_ALIASES = {"micron": "um", "microns": "um", "µm": "um", "μm": "um", "\\u00b5m": "um",
                 "micrometer": "um", "millimeter": "mm", "nanometer": "nm", "meter": "m"}
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_tmp_counter = itertools.count()
@dataclass
class ImageMeta:
    """What a file says about its array besides the pixels."""

    format: str
    dtype: str
    spacing: tuple | None = None
    unit: str | None = None
    affine: list | None = None
    channel_names: list | None = None


def _err(path, msg: str) -> NeurodiffError:
    return NeurodiffError(f"{path}: {msg}")


def _reason(exc: BaseException) -> str:
    # library messages can span lines; the CLI prints errors on one line
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _suffix(path) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def stem(path) -> str:
    """``path`` as a string without its suffix (``.nii.gz`` counted as one): names that pair files across formats."""
    p, suf = str(path), _suffix(path)
    return p[:-len(suf)] if suf else p


def format_of(path) -> str:
    """Format name from the file suffix; NeurodiffError for an unknown one."""
    suf = _suffix(path)
    if suf not in SUFFIXES:
        shown = f"'{suf}'" if suf else "(no suffix)"
        raise _err(path, f"unsupported file type {shown} (expected {_EXPECTED})")
    return SUFFIXES[suf]


def writable_format(path) -> str:
    """``format_of`` for an output: one-line error for a suffix neurodiff reads but does not write (check it
    before long work)."""
    fmt = format_of(path)
    if _suffix(path) == ".svs":
        raise _err(path, "SVS (Aperio) is read only; write a .tif (ImageJ TIFF, BigTIFF above 4 GB) instead")
    return fmt


def is_image_file(path) -> bool:
    """True for a supported suffix; hidden files (our temp files, '._x.png') are skipped."""
    if Path(path).name.startswith("."):
        return False
    try:
        format_of(path)
    except NeurodiffError:
        return False
    return True


def _check_voxels(path, shape) -> None:
    if any(int(s) < 0 for s in shape) or math.prod(int(s) for s in shape) > MAX_VOXELS:
        raise _err(path, f"header says shape {tuple(int(s) for s in shape)}, "
                         f"more than MAX_VOXELS={MAX_VOXELS}; refusing to read")


def _norm_unit(unit) -> str | None:
    u = _UNIT_ALIASES.get(str(unit).strip().lower(), str(unit).strip())
    return None if unit is None or u.lower() in ("", "pixel", "pixels", "none") else u


# ---------------------------------------------------------------- read


def read(path) -> tuple[np.ndarray, ImageMeta]:
    """Read an image file as ``([C, *S] array, ImageMeta)``."""
    fmt = format_of(path)
    p = Path(path)
    if fmt == "zarr":  # a folder, possibly larger than memory: data/zarrio.py
        from neurodiff.data import zarrio
        return zarrio.read(path)
    if not p.is_file():
        raise _err(path, "is not a regular file" if p.exists() else "no such file")
    if p.stat().st_size == 0:
        raise _err(path, f"empty file (0 bytes), expected a {fmt.upper()} image")
    try:
        x, meta = _READERS[fmt](p, path)
    except NeurodiffError:
        raise
    except Exception as exc:  # every library error becomes one user-facing line
        if "imagecodecs" in str(exc):     # e.g. the JPEG tiles of whole-slide images
            raise _err(path, f"cannot read {fmt.upper()}: its compression needs pip install imagecodecs "
                             f"({_reason(exc)})") from exc
        raise _err(path, f"cannot read {fmt.upper()} (truncated or corrupt file: {_reason(exc)})") from exc
    if x.dtype.kind not in "biuf":
        raise _err(path, f"unsupported data type {x.dtype.name} (expected integer or float)")
    if x.ndim not in (3, 4) or x.size == 0:
        raise _err(path, f"got array of shape {tuple(x.shape)} after reading; expected "
                         "[C,H,W] or [C,D,H,W] with no empty axis")
    meta.dtype = x.dtype.name
    return np.ascontiguousarray(x), meta


def _read_pillow(p: Path, path):
    with open(p, "rb") as f:
        head = f.read(33)
    if head[:8] == _PNG_SIG and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 4, 6):
        from neurodiff.data import png16

        return png16.decode(p.read_bytes(), path, _check_voxels), ImageMeta("png", "uint16")
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None   # MAX_VOXELS guards here (gigapixel masks)
    try:
        im = Image.open(p)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    with im:
        fmt = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg"}.get(im.format, format_of(path))
        w, h = im.size
        _check_voxels(path, (len(im.getbands()), h, w))
        im.load()
        mode = im.mode
        if mode.startswith("I;16") or (mode == "I" and fmt == "png"):
            a = np.asarray(im).astype(np.uint16)  # 16-bit gray PNG: exact values
        elif mode in ("L", "I", "F", "RGB"):
            a = np.asarray(im)
        elif mode in ("1", "LA", "La"):
            a = np.asarray(im.convert("L"))
        elif mode in ("P", "PA", "RGBA", "RGBa", "RGBX"):
            a = np.asarray(im.convert("RGBA"))[..., :3]  # alpha is not image content here
        else:  # CMYK, YCbCr, LAB, HSV...
            a = np.asarray(im.convert("RGB"))
    x = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    return x, ImageMeta(fmt, x.dtype.name)


def _read_tiff(p: Path, path):
    # tifffile only logs some corruption (e.g. a cut-off page chain) and returns fewer pages
    log, handler, errors = logging.getLogger("tifffile"), logging.Handler(logging.ERROR), []
    handler.emit = lambda record: errors.append(record.getMessage())
    log.addHandler(handler)
    try:
        return _read_tiff_logged(p, path, errors)
    finally:
        log.removeHandler(handler)


def _read_tiff_logged(p: Path, path, errors: list):
    import tifffile

    from neurodiff.data.tiffio import tiff_layout

    with tifffile.TiffFile(p) as tif:
        lay = tiff_layout(tif, path)
        _check_voxels(path, lay.shape)
        x = tif.series[0].asarray()
    if errors:
        raise ValueError(errors[0])
    if lay.colours:
        x = x.take(range(lay.colours), axis=lay.axes.index("S"))  # RGBA, grey + alpha: drop the alpha
    x = x.reshape([x.shape[i] for i in lay.keep]).transpose(lay.order)
    return x.reshape((-1,) + x.shape[lay.n_chan:]), lay.meta


def _read_nifti(p: Path, path):
    import nibabel as nib

    img = nib.load(str(p), mmap=False)
    hdr = img.header
    shape = list(hdr.get_data_shape())
    _check_voxels(path, shape)
    _check_nifti_size(p, path, hdr, shape)
    # nibabel moves scl_slope/scl_inter from the header to the data proxy on load
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    if slope != 1.0 or inter != 0.0:
        x = np.asanyarray(img.dataobj).astype(np.float32)
    else:
        x = np.asanyarray(img.dataobj)  # stored dtype kept
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if len(shape) == 5 and shape[3] == 1:  # NIfTI vector image: components on the 5th axis
        shape.pop(3)
    if len(shape) > 4 or len(shape) < 2:
        raise _err(path, f"NIfTI has shape {tuple(hdr.get_data_shape())}; expected 2D, 3D or 4D")
    x = x.reshape(shape)  # only drops singleton axes, so memory order does not matter
    if len(shape) == 4:
        x = np.moveaxis(x, -1, 0)  # NIfTI keeps time/channels last
    else:
        x = x[None]
    if x.shape[-1] == 1:  # [I,J,1]: a 2D slice
        x = x[..., 0]
    nsp = x.ndim - 1
    spacing = tuple(float(z) for z in hdr.get_zooms()[:nsp])
    unit = {"micron": "um", "meter": "m"}.get(hdr.get_xyzt_units()[0], "mm")
    return x, ImageMeta("nifti", x.dtype.name, spacing, unit, np.asarray(img.affine, float).tolist())


DEFLATE_MAX_RATIO = 1032   # deflate cannot expand data more than ~1032x: a bound on a .gz file's content


def _check_nifti_size(p: Path, path, hdr, shape) -> None:
    """Refuse a header that promises more data than the file can hold, before nibabel allocates a buffer for it."""
    name = p.name.lower()
    if not name.endswith((".nii", ".nii.gz")):    # header and data in one file only
        return
    need = int(hdr.get_data_offset()) + math.prod(int(s) for s in shape) * hdr.get_data_dtype().itemsize
    size = p.stat().st_size
    can_hold = size * DEFLATE_MAX_RATIO + 1024 if name.endswith(".gz") else size
    if need > can_hold:
        raise _err(path, f"truncated NIfTI: header says shape {tuple(int(s) for s in shape)} "
                         f"({need:,} bytes) but the file can hold at most {can_hold:,}")


def _npy_shape(f):
    version = np.lib.format.read_magic(f)
    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    return reader[version](f)[0] if version in reader else None


def _npy_layout(path, x, spatial_ndim=None):
    if spatial_ndim is not None and x.ndim == spatial_ndim + 1:
        return x
    if x.ndim in (2, 3):
        return x[None]
    if x.ndim == 4:
        return x
    raise _err(path, f"array has shape {tuple(x.shape)}; expected [H,W], [D,H,W] or [C,D,H,W]")


def _read_npy(p: Path, path):
    with open(p, "rb") as f:
        shape = _npy_shape(f)
        if shape is not None:
            _check_voxels(path, shape)
        f.seek(0)
        x = _npy_layout(path, np.load(f, allow_pickle=False))
    return x, ImageMeta("npy", x.dtype.name)


def _read_npz(p: Path, path):
    extras = ("spacing", "affine", "unit", "channel_names", "spatial_ndim")
    # our own handle: np.load(path) leaks it when the zip is corrupt
    with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as z:
        names = [k for k in z.files if k not in extras]
        if not names:
            raise _err(path, f"npz holds no image array (keys: {z.files})")
        key = "x" if "x" in names else names[0]
        with z.zip.open(key + ".npy") as f:
            shape = _npy_shape(f)
        if shape is not None:
            _check_voxels(path, shape)
        get = {k: z[k] for k in extras if k in z.files}
        x = _npy_layout(path, z[key], int(get["spatial_ndim"]) if "spatial_ndim" in get else None)
    return x, ImageMeta(
        "npz", x.dtype.name,
        spacing=tuple(float(s) for s in get["spacing"]) if "spacing" in get else None,
        unit=str(get["unit"]) if "unit" in get else None,
        affine=get["affine"].astype(float).tolist() if "affine" in get else None,
        channel_names=[str(c) for c in get["channel_names"]] if "channel_names" in get else None)


_READERS = {"png": _read_pillow, "jpeg": _read_pillow, "tiff": _read_tiff,
            "nifti": _read_nifti, "npy": _read_npy, "npz": _read_npz}


# ---------------------------------------------------------------- write


def write(path, x: np.ndarray, meta: ImageMeta | None = None) -> None:
    """Write ``x`` ([C,*S], or a bare [H,W]) atomically; the format comes from the suffix."""
    fmt, x, meta = _checked(path, x, meta)
    p = Path(path)
    if fmt == "zarr":
        from neurodiff.data import zarrio
        return zarrio.write(path, x, meta)
    p.parent.mkdir(parents=True, exist_ok=True)
    suf = _suffix(p)
    # hidden temp name in the same folder (same filesystem for os.replace), real suffix last
    tmp = p.with_name(f".{p.name[:-len(suf)]}.tmp{os.getpid()}-{next(_tmp_counter)}{p.name[-len(suf):]}")
    try:
        _WRITERS[fmt](tmp, path, x, meta)
        os.replace(tmp, p)
    except Exception as exc:
        _one_line(path, fmt, exc)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(path, shape, dtype, meta: ImageMeta | None = None) -> None:
    """One-line error, before long work, when an array of ``shape`` [C, *S] and ``dtype`` cannot be written to
    ``path`` (its format's limits on channels, axes and data types): a stand-in of at most 2 pixels an axis is
    written to a temporary folder."""
    stand = np.zeros((int(shape[0]), *[min(int(n), 2) for n in shape[1:]]), np.dtype(dtype))
    fmt, stand, meta = _checked(path, stand, meta)
    if fmt != "zarr":
        with tempfile.TemporaryDirectory() as d:
            try:
                _WRITERS[fmt](Path(d) / f"stand-in{_suffix(path)}", path, stand, meta)
            except Exception as exc:
                _one_line(path, fmt, exc)


def _checked(path, x, meta):
    """(format, x as [C,*S], meta) for ``write``, or a one-line error naming ``path``."""
    fmt = writable_format(path)
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim not in (3, 4) or x.size == 0:
        raise _err(path, f"cannot write array of shape {tuple(x.shape)}; expected [C,H,W], "
                         "[C,D,H,W] or [H,W] with no empty axis")
    if x.dtype.kind not in "biuf":
        raise _err(path, f"cannot write data type {x.dtype.name}; convert to an integer or float type")
    meta = meta or ImageMeta(fmt, x.dtype.name)
    if meta.spacing is not None:
        sp = np.asarray(meta.spacing, float)
        if sp.shape != (x.ndim - 1,) or not np.all(np.isfinite(sp) & (sp > 0)):
            raise _err(path, f"spacing {tuple(meta.spacing)} does not fit array {tuple(x.shape)}; "
                             f"expected {x.ndim - 1} positive numbers")
    return fmt, x, meta


def _one_line(path, fmt: str, exc: Exception):
    """Raise a failed write of ``path`` as a one-line error naming it (ours as they are)."""
    if isinstance(exc, NeurodiffError):
        raise exc
    raise _err(path, f"cannot write {fmt.upper()} ({_reason(exc)})") from exc


def _write_pillow(tmp: Path, path, x, meta):
    fmt = format_of(path)
    allowed = ("uint8", "uint16") if fmt == "png" else ("uint8",)
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise _err(path, f"{fmt.upper()} holds a 2D image [1,H,W] or [3,H,W], got shape {tuple(x.shape)}")
    if x.dtype.name not in allowed:
        raise _err(path, f"{fmt.upper()} holds {' or '.join(allowed)}, got {x.dtype.name}; convert first")
    if x.dtype == np.uint16 and x.shape[0] == 3:
        from neurodiff.data import png16

        tmp.write_bytes(png16.encode(x))  # Pillow has no 16-bit RGB mode
        return
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)))
    im.save(tmp, format="PNG" if fmt == "png" else "JPEG", **({"quality": 95} if fmt == "jpeg" else {}))


def _write_tiff(tmp: Path, path, x, meta):
    import tifffile

    from neurodiff.data.tiffio import tiff_data, tiff_plan

    layout, kw = tiff_plan(x.shape, x.dtype, meta)
    tifffile.imwrite(tmp, tiff_data(x, layout), **kw)


_NIFTI_UNITS = {"um": "micron", "m": "meter"}


def _write_nifti(tmp: Path, path, x, meta):
    import nibabel as nib

    if x.dtype.name not in ("uint8", "int8", "int16", "uint16", "int32", "uint32",
                            "int64", "uint64", "float32", "float64"):
        raise _err(path, f"NIfTI cannot hold {x.dtype.name}; convert to uint8, int16, float32 or similar")
    data = x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)
    if x.ndim == 3:  # 2D image: a single-slice volume, channels (if any) on the 4th axis
        data = data[:, :, None] if x.shape[0] == 1 else data[:, :, None, :]
    if meta.affine is not None:
        affine = np.asarray(meta.affine, float)
        if affine.shape != (4, 4):
            raise _err(path, f"affine must be 4x4, got shape {affine.shape}")
    else:
        sp = list(meta.spacing or [])
        affine = np.diag(sp + [1.0] * (4 - len(sp))) if sp else np.eye(4)
    img = nib.Nifti1Image(data, affine, dtype=x.dtype)
    img.header.set_xyzt_units(_NIFTI_UNITS.get(_norm_unit(meta.unit), "mm"))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(tmp))


def _npy_payload(path, x, fmt):
    if x.shape[0] == 1:
        return x[0], None  # a bare [H,W] / [D,H,W] reads back as [1,*S]
    if x.ndim == 4:
        return x, None
    if fmt == "npy":
        raise _err(path, f"a multi-channel 2D image {tuple(x.shape)} would read back from .npy as a "
                         "volume; use .npz or .tif")
    return x, 2


def _write_npy(tmp: Path, path, x, meta):
    np.save(tmp, _npy_payload(path, x, "npy")[0])


def _write_npz(tmp: Path, path, x, meta):
    data, spatial = _npy_payload(path, x, "npz")
    extra = {"spatial_ndim": spatial, "spacing": meta.spacing, "affine": meta.affine,
             "unit": meta.unit, "channel_names": meta.channel_names}
    out = {"x": data, **{k: np.asarray(v) for k, v in extra.items() if v is not None}}
    with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a path
        np.savez_compressed(f, **out)


_WRITERS = {"png": _write_pillow, "jpeg": _write_pillow, "tiff": _write_tiff,
            "nifti": _write_nifti, "npy": _write_npy, "npz": _write_npz}
