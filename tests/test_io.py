"""Tests for neurodiff.data.io: round trips, metadata, error messages, atomic writes."""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from neurodiff.data import io as nio
from neurodiff.data.io import ImageMeta, format_of, is_image_file, read, write
from neurodiff.errors import NeurodiffError

RNG = np.random.default_rng(0)


def rand(shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return RNG.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def assert_same(got, want):
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def assert_one_line_error(excinfo, name):
    msg = str(excinfo.value)
    assert name in msg, msg
    assert "\n" not in msg, msg


# ---------------------------------------------------------------- suffixes


@pytest.mark.parametrize("name, fmt", [
    ("a.png", "png"), ("a.JPG", "jpeg"), ("a.jpeg", "jpeg"), ("a.tif", "tiff"), ("a.ome.TIFF", "tiff"),
    ("a.nii", "nifti"), ("dir.v2/A.NII.GZ", "nifti"), ("a.npy", "npy"), ("a.npz", "npz"),
])
def test_format_of_known(name, fmt):
    assert format_of(name) == fmt
    assert is_image_file(name)


@pytest.mark.parametrize("name", ["foo.bmp", "scan.gz", "noext", "x.npy.gz"])
def test_format_of_unknown(name):
    with pytest.raises(NeurodiffError) as e:
        format_of(name)
    assert_one_line_error(e, name)
    assert ".nii.gz" in str(e.value)
    assert not is_image_file(name)


def test_is_image_file_skips_hidden_temp_files():
    assert not is_image_file(".sample.tmp123-0.nii.gz")
    assert not is_image_file("dir/._photo.png")


# ---------------------------------------------------------------- PNG / JPEG


@pytest.mark.parametrize("shape, dtype", [((1, 17, 23), "uint8"), ((1, 17, 23), "uint16"),
                                          ((3, 17, 23), "uint8"), ((3, 17, 23), "uint16")])
def test_png_round_trip(tmp_path, shape, dtype):
    x = rand(shape, dtype)
    write(tmp_path / "a.png", x)
    y, meta = read(tmp_path / "a.png")
    assert_same(y, x)
    assert (meta.format, meta.dtype, meta.spacing, meta.affine) == ("png", dtype, None, None)


def test_png_bare_2d_array_is_one_gray_image(tmp_path):
    x = rand((9, 11), "uint8")
    write(tmp_path / "a.png", x)
    assert_same(read(tmp_path / "a.png")[0], x[None])


@pytest.mark.parametrize("channels", [1, 3])
def test_png_uint16_full_range_bit_exact(tmp_path, channels):
    x = np.stack([np.arange(65536, dtype=np.uint16).reshape(256, 256)] * channels)
    if channels == 3:
        x[1] = x[1][::-1]
        x[2] = 65535 - x[2]
    write(tmp_path / "a.png", x)
    y, meta = read(tmp_path / "a.png")
    assert_same(y, x)
    assert y.min() == 0 and y.max() == 65535


def _filtered_png16(px, filters):
    """Reference 16-bit PNG encoder using PNG filters 0-4 (per row), to test our decoder."""
    h, w, ch = px.shape
    bpp = 2 * ch
    raw = px.astype(">u2").view(np.uint8).reshape(h, w * bpp).astype(np.int32)
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    upleft = np.zeros_like(raw)
    upleft[1:, bpp:] = raw[:-1, :-bpp]
    p = left + up - upleft
    pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    preds = [np.zeros_like(raw), left, up, (left + up) // 2, paeth]
    rows = [bytes([f]) + ((raw[i] - preds[f][i]) % 256).astype(np.uint8).tobytes()
            for i, f in enumerate(filters)]

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    color = {2: 4, 3: 2, 4: 6}[ch]
    data = zlib.compress(b"".join(rows))
    # split IDAT in two to exercise chunk concatenation
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0))
            + chunk(b"IDAT", data[:10]) + chunk(b"IDAT", data[10:]) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_png16_colour_decoder_handles_all_filters(tmp_path, channels):
    px = rand((40, 31, channels), "uint16")
    px[:, 10:20] = px[:, 10:11]  # some smooth areas so predictions matter
    filters = RNG.integers(0, 5, size=40)
    filters[:5] = [0, 1, 2, 3, 4]
    path = tmp_path / "f.png"
    path.write_bytes(_filtered_png16(px, filters))
    y, meta = read(path)
    want = px[..., :1] if channels == 2 else px[..., :3]  # alpha dropped
    assert_same(y, np.moveaxis(want, -1, 0))
    if channels == 3:  # independent check: Pillow decodes the same file to the high bytes
        hi = np.asarray(Image.open(path))
        np.testing.assert_array_equal(hi, (px >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode, channels", [("RGBA", 3), ("P", 3), ("1", 1), ("LA", 1), ("L", 1)])
def test_png_modes_map_to_gray_or_rgb(tmp_path, mode, channels):
    rgba = rand((12, 13, 4), "uint8")
    im = Image.fromarray(rgba, "RGBA").convert(mode)
    im.save(tmp_path / "m.png")
    y, meta = read(tmp_path / "m.png")
    assert y.shape == (channels, 12, 13) and y.dtype == np.uint8
    if mode == "RGBA":
        assert_same(y, np.moveaxis(rgba[..., :3], -1, 0))
    if mode == "1":
        assert set(np.unique(y)) <= {0, 255}


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_round_trip_is_close(tmp_path, channels):
    yy, xx = np.mgrid[0:64, 0:48]
    x = np.stack([((yy + xx * (c + 1)) * 2 % 256) for c in range(channels)]).astype(np.uint8)
    x = np.clip(x, 0, 200)
    write(tmp_path / "a.jpg", x)
    y, meta = read(tmp_path / "a.jpg")
    assert (y.shape, y.dtype, meta.format) == (x.shape, np.uint8, "jpeg")
    assert np.abs(y.astype(int) - x).mean() < 4


@pytest.mark.parametrize("dtype", ["float32", "int16", "bool"])
def test_png_write_rejects_other_dtypes(tmp_path, dtype):
    with pytest.raises(NeurodiffError) as e:
        write(tmp_path / "x.png", np.zeros((1, 4, 4), dtype))
    assert_one_line_error(e, "x.png")
    assert dtype in str(e.value) and "convert" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_png_write_rejects_volumes_and_two_channels(tmp_path):
    for shape in [(1, 3, 4, 4), (2, 4, 4)]:
        with pytest.raises(NeurodiffError, match="x.png"):
            write(tmp_path / "x.png", np.zeros(shape, np.uint8))


# ---------------------------------------------------------------- TIFF

TIFF_DTYPES = ["uint8", "uint16", "float32", "int16", "int32", "uint32", "float64"]


@pytest.mark.parametrize("dtype", TIFF_DTYPES)
@pytest.mark.parametrize("shape, spacing", [((1, 19, 21), (0.65, 0.8)),
                                            ((1, 5, 19, 21), (2.5, 0.65, 0.8)),
                                            ((2, 4, 9, 10), (3.0, 0.3, 0.3))])
def test_tiff_round_trip(tmp_path, dtype, shape, spacing):
    x = rand(shape, dtype)
    write(tmp_path / "a.tif", x, ImageMeta("tiff", dtype, spacing=spacing, unit="um"))
    y, meta = read(tmp_path / "a.tif")
    assert_same(y, x)
    assert meta.format == "tiff" and meta.dtype == dtype
    assert meta.unit == "um"
    np.testing.assert_allclose(meta.spacing, spacing, rtol=1e-4)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float64"])
def test_tiff_multichannel_2d_round_trip(tmp_path, dtype):
    x = rand((3, 14, 15), dtype)
    write(tmp_path / "a.tiff", x, ImageMeta("tiff", dtype, spacing=(2.0, 4.0), unit="mm"))
    y, meta = read(tmp_path / "a.tiff")
    assert_same(y, x)
    np.testing.assert_allclose(meta.spacing, (2.0, 4.0), rtol=1e-4)
    assert meta.unit == "mm"


def test_tiff_without_spacing_reads_none(tmp_path):
    x = rand((1, 6, 7), "int16")
    write(tmp_path / "a.tif", x)
    y, meta = read(tmp_path / "a.tif")
    assert_same(y, x)
    assert meta.spacing is None and meta.unit is None


def test_tiff_uint16_full_range_bit_exact(tmp_path):
    x = np.arange(65536, dtype=np.uint16).reshape(1, 256, 256)
    write(tmp_path / "a.tif", x, ImageMeta("tiff", "uint16", spacing=(1.0, 1.0), unit="um"))
    assert_same(read(tmp_path / "a.tif")[0], x)


def test_tiff_spacing_is_visible_to_imagej(tmp_path):
    x = rand((1, 4, 8, 9), "uint16")
    write(tmp_path / "s.tif", x, ImageMeta("tiff", "uint16", spacing=(2.5, 0.65, 0.65), unit="um"))
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        assert tif.is_imagej
        ij = tif.imagej_metadata
        assert ij["spacing"] == pytest.approx(2.5)
        assert ij["unit"] == "um"
        assert ij["slices"] == 4
        num, den = tif.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(1 / 0.65, rel=1e-6)


def test_tiff_plain_dtype_writes_physical_resolution(tmp_path):
    meta = ImageMeta("tiff", "int32", spacing=(0.5, 0.5), unit="um")
    write(tmp_path / "p.tif", rand((1, 6, 6), "int32"), meta)
    with tifffile.TiffFile(tmp_path / "p.tif") as tif:
        page = tif.pages[0]
        assert int(page.tags["ResolutionUnit"].value) == 3  # centimetre, for non-ImageJ readers
        num, den = page.tags["XResolution"].value
        assert num / den == pytest.approx(1 / 0.5e-4, rel=1e-6)


def test_tiff_read_foreign_layouts(tmp_path):
    stack = rand((5, 8, 9), "uint16")
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    assert_same(read(tmp_path / "stack.tif")[0], stack[None])

    rgb = rand((8, 9, 3), "uint8")
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert_same(read(tmp_path / "rgb.tif")[0], np.moveaxis(rgb, -1, 0))

    rgba = rand((8, 9, 4), "uint8")
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    assert_same(read(tmp_path / "rgba.tif")[0], np.moveaxis(rgba[..., :3], -1, 0))

    hyper = rand((4, 2, 8, 9), "uint8")  # ImageJ order Z, C, Y, X
    tifffile.imwrite(tmp_path / "h.tif", hyper, imagej=True, metadata={"axes": "ZCYX", "spacing": 3.0},
                     resolution=(2.0, 2.0))
    y, meta = read(tmp_path / "h.tif")
    assert_same(y, np.moveaxis(hyper, 1, 0))
    np.testing.assert_allclose(meta.spacing, (3.0, 0.5, 0.5))

    inch = rand((8, 9), "uint8")
    tifffile.imwrite(tmp_path / "dpi.tif", inch, resolution=(254.0, 254.0), resolutionunit="INCH")
    y, meta = read(tmp_path / "dpi.tif")
    assert meta.unit == "mm"
    np.testing.assert_allclose(meta.spacing, (0.1, 0.1), rtol=1e-6)


def test_tiff_too_many_axes_is_an_error(tmp_path):
    tifffile.imwrite(tmp_path / "tz.tif", np.zeros((2, 3, 4, 5), np.uint8), imagej=True,
                     metadata={"axes": "TZYX"})
    with pytest.raises(NeurodiffError) as e:
        read(tmp_path / "tz.tif")
    assert_one_line_error(e, "tz.tif")
    assert "TZYX" in str(e.value)


# ---------------------------------------------------------------- NIfTI

AFFINE = [[0.0, -1.2, 0.1, 10.0], [0.9, 0.0, 0.0, -20.5], [0.0, 0.2, 2.5, 3.25], [0.0, 0.0, 0.0, 1.0]]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "uint16", "int32", "float64"])
def test_nifti_3d_round_trip_with_affine(tmp_path, suffix, dtype):
    x = rand((1, 7, 8, 9), dtype)
    write(tmp_path / f"v{suffix}", x, ImageMeta("nifti", dtype, affine=AFFINE))
    y, meta = read(tmp_path / f"v{suffix}")
    assert_same(y, x)
    assert meta.format == "nifti" and meta.unit == "mm"
    np.testing.assert_allclose(meta.affine, AFFINE, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(meta.spacing, np.linalg.norm(np.array(AFFINE)[:3, :3], axis=0), rtol=1e-6)
    assert np.asanyarray(nib.load(tmp_path / f"v{suffix}").dataobj).shape == (7, 8, 9)


def test_nifti_spacing_only_gives_diagonal_affine(tmp_path):
    x = rand((1, 4, 5, 6), "int16")
    write(tmp_path / "v.nii.gz", x, ImageMeta("nifti", "int16", spacing=(0.5, 1.0, 2.0), unit="um"))
    y, meta = read(tmp_path / "v.nii.gz")
    assert_same(y, x)
    assert meta.spacing == pytest.approx((0.5, 1.0, 2.0))
    assert meta.unit == "um"
    np.testing.assert_allclose(meta.affine, np.diag([0.5, 1.0, 2.0, 1.0]))


@pytest.mark.parametrize("channels", [1, 3])
def test_nifti_2d_round_trip(tmp_path, channels):
    x = rand((channels, 10, 12), "float32")
    write(tmp_path / "s.nii", x, ImageMeta("nifti", "float32", spacing=(0.7, 0.8)))
    y, meta = read(tmp_path / "s.nii")
    assert_same(y, x)
    assert meta.spacing == pytest.approx((0.7, 0.8))
    on_disk = nib.load(tmp_path / "s.nii").shape
    assert on_disk == ((10, 12, 1) if channels == 1 else (10, 12, 1, 3))


def test_nifti_4d_channels_last_on_disk(tmp_path):
    x = rand((3, 5, 6, 7), "int16")
    write(tmp_path / "t.nii.gz", x)
    img = nib.load(tmp_path / "t.nii.gz")
    assert img.shape == (5, 6, 7, 3)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj)[..., 2], x[2])
    y, meta = read(tmp_path / "t.nii.gz")
    assert_same(y, x)
    assert len(meta.spacing) == 3
    np.testing.assert_allclose(meta.affine, np.eye(4))


def test_nifti_foreign_2d_and_scaled(tmp_path):
    raw = rand((6, 7), "int16")
    nib.save(nib.Nifti1Image(raw, np.eye(4)), tmp_path / "flat.nii")
    assert_same(read(tmp_path / "flat.nii")[0], raw[None])

    img = nib.Nifti1Image(rand((4, 5, 6), "int16"), np.eye(4), dtype=np.int16)
    img.header.set_slope_inter(2.0, 10.0)
    nib.save(img, tmp_path / "scaled.nii")
    stored = np.asanyarray(nib.load(tmp_path / "scaled.nii").dataobj.get_unscaled())
    y, meta = read(tmp_path / "scaled.nii")
    assert y.dtype == np.float32 and meta.dtype == "float32"
    np.testing.assert_allclose(y[0], stored.astype(np.float64) * 2 + 10, rtol=1e-6)


def test_nifti_write_rejects_float16(tmp_path):
    with pytest.raises(NeurodiffError) as e:
        write(tmp_path / "h.nii", np.zeros((1, 2, 3, 4), np.float16))
    assert_one_line_error(e, "h.nii")
    assert "float16" in str(e.value)


# ---------------------------------------------------------------- npy / npz


@pytest.mark.parametrize("stored, want", [((6, 7), (1, 6, 7)), ((5, 6, 7), (1, 5, 6, 7)),
                                          ((2, 5, 6, 7), (2, 5, 6, 7))])
def test_npy_read_rules(tmp_path, stored, want):
    a = rand(stored, "float32")
    np.save(tmp_path / "a.npy", a)
    y, meta = read(tmp_path / "a.npy")
    assert_same(y, a.reshape(want))
    assert meta.format == "npy"


@pytest.mark.parametrize("shape", [(7,), (1, 2, 3, 4, 5), (0, 4), (3, 0, 4)])
def test_npy_bad_shapes(tmp_path, shape):
    np.save(tmp_path / "b.npy", np.zeros(shape, np.float32))
    with pytest.raises(NeurodiffError) as e:
        read(tmp_path / "b.npy")
    assert_one_line_error(e, "b.npy")


@pytest.mark.parametrize("shape", [(1, 6, 7), (1, 4, 6, 7), (2, 4, 6, 7)])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "bool"])
def test_npy_round_trip(tmp_path, shape, dtype):
    x = rand(shape, "uint8").astype(dtype) if dtype == "bool" else rand(shape, dtype)
    write(tmp_path / "a.npy", x)
    assert_same(read(tmp_path / "a.npy")[0], x)


def test_npy_refuses_ambiguous_multichannel_2d(tmp_path):
    with pytest.raises(NeurodiffError, match="a.npy.*npz"):
        write(tmp_path / "a.npy", np.zeros((3, 4, 5), np.float32))


@pytest.mark.parametrize("shape", [(1, 6, 7), (3, 6, 7), (1, 4, 6, 7), (2, 4, 6, 7)])
def test_npz_round_trip_with_metadata(tmp_path, shape):
    x = rand(shape, "float32")
    sp = (0.5,) * (len(shape) - 1)
    names = list("abc")[: shape[0]]
    meta = ImageMeta("npz", "float32", spacing=sp, unit="mm", affine=AFFINE, channel_names=names)
    write(tmp_path / "a.npz", x, meta)
    y, got = read(tmp_path / "a.npz")
    assert_same(y, x)
    assert got.spacing == sp and got.unit == "mm" and got.affine == AFFINE
    assert got.channel_names == meta.channel_names


def test_npz_foreign_keys(tmp_path):
    a, b = rand((5, 6), "int16"), rand((5, 6), "int16")
    np.savez(tmp_path / "first.npz", img=a, other=b, spacing=np.array([1.5, 2.5]))
    y, meta = read(tmp_path / "first.npz")
    assert_same(y, a[None])
    assert meta.spacing == (1.5, 2.5)
    np.savez(tmp_path / "keyed.npz", img=a, x=b)
    assert_same(read(tmp_path / "keyed.npz")[0], b[None])


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    path = tmp_path / "nothere.tif"
    with pytest.raises(NeurodiffError) as e:
        read(path)
    assert str(e.value) == f"{path}: no such file"


def test_unknown_suffix_on_read_and_write(tmp_path):
    (tmp_path / "foo.bmp").write_bytes(b"BM")
    bmp = tmp_path / "foo.bmp"
    for call in (lambda: read(bmp), lambda: write(bmp, np.zeros((4, 4)))):
        with pytest.raises(NeurodiffError) as e:
            call()
        assert_one_line_error(e, "foo.bmp")
        assert "'.bmp'" in str(e.value)


def _valid_file(path):
    x = rand((1, 40, 64, 64), "uint16") if format_of(path) in ("tiff", "nifti", "npy", "npz") else None
    if x is None:
        x = rand((3, 64, 64), "uint8")
    write(path, x)


@pytest.mark.parametrize("name", ["t.png", "t.jpg", "t.tif", "t.nii", "t.nii.gz", "t.npy", "t.npz"])
def test_truncated_and_empty_files(tmp_path, name):
    path = tmp_path / name
    _valid_file(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(NeurodiffError) as e:
        read(path)
    assert_one_line_error(e, name)
    path.write_bytes(b"")
    with pytest.raises(NeurodiffError) as e:
        read(path)
    assert_one_line_error(e, name)
    assert "empty" in str(e.value)


def test_truncated_png16_rgb(tmp_path):
    path = tmp_path / "c.png"
    path.write_bytes(_filtered_png16(rand((20, 20, 3), "uint16"), [4] * 20)[:300])
    with pytest.raises(NeurodiffError) as e:
        read(path)
    assert_one_line_error(e, "c.png")


def test_garbage_content(tmp_path):
    for name in ["g.png", "g.tif", "g.nii", "g.npy", "g.npz"]:
        (tmp_path / name).write_bytes(b"this is not an image at all" * 10)
        with pytest.raises(NeurodiffError) as e:
            read(tmp_path / name)
        assert_one_line_error(e, name)


@pytest.mark.parametrize("name", ["big.png", "big.tif", "big.nii", "big.npy", "big.npz"])
def test_max_voxels_guard(tmp_path, monkeypatch, name):
    path = tmp_path / name
    write(path, np.zeros((1, 20, 20), np.uint8))
    monkeypatch.setattr(nio, "MAX_VOXELS", 100)
    with pytest.raises(NeurodiffError) as e:
        read(path)
    assert_one_line_error(e, name)
    assert "MAX_VOXELS" in str(e.value)


def test_absurd_nifti_header_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.nii"
    write(path, np.zeros((1, 2, 2, 2), np.int16))
    data = bytearray(path.read_bytes())
    data[40:48] = struct.pack("<4h", 3, 30000, 30000, 30000)  # dim[0..3]
    path.write_bytes(bytes(data))
    with pytest.raises(NeurodiffError, match="huge.nii.*MAX_VOXELS"):
        read(path)


def test_folder_is_not_a_file(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(NeurodiffError, match="d.png"):
        read(tmp_path / "d.png")


# ---------------------------------------------------------------- writing


def test_write_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "c.nii.gz"
    write(path, np.ones((1, 3, 3, 3), np.float32))
    assert read(path)[0].shape == (1, 3, 3, 3)


def test_write_rejects_bad_shapes_and_spacing(tmp_path):
    with pytest.raises(NeurodiffError, match="x.tif"):
        write(tmp_path / "x.tif", np.zeros((2, 3, 4, 5, 6), np.uint8))
    for bad in [(1.0, 2.0, 3.0), (0.0, 2.0), (float("nan"), 1.0)]:
        with pytest.raises(NeurodiffError, match="x.tif.*spacing"):
            write(tmp_path / "x.tif", np.zeros((1, 4, 5), np.uint8), ImageMeta("tiff", "uint8", spacing=bad))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, module, attr", [
    ("a.tif", tifffile, "imwrite"), ("a.nii.gz", nib, "save"), ("a.npy", np, "save")])
def test_write_is_atomic(tmp_path, monkeypatch, name, module, attr):
    target = tmp_path / name
    write(target, np.ones((1, 4, 5, 6), np.uint8))
    before = target.read_bytes()
    seen = []

    def broken_writer(dest, *args, **kwargs):
        dest = dest if isinstance(dest, (str, os.PathLike)) else args[0]
        seen.append(os.path.basename(dest))
        with open(dest, "wb") as f:
            f.write(b"half a file")
        raise RuntimeError("disk on fire")

    if module is nib:
        monkeypatch.setattr(nib, "save", lambda img, dest: broken_writer(dest))
    else:
        monkeypatch.setattr(module, attr, broken_writer)
    with pytest.raises(NeurodiffError) as e:
        write(target, np.zeros((1, 4, 5, 6), np.uint8))
    assert_one_line_error(e, name)
    assert "disk on fire" in str(e.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    suffix = ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]
    assert seen[0].startswith(".a.tmp") and seen[0].endswith(suffix)


def test_failed_validation_leaves_previous_file(tmp_path):
    target = tmp_path / "x.png"
    write(target, np.ones((1, 4, 4), np.uint8))
    before = target.read_bytes()
    with pytest.raises(NeurodiffError):
        write(target, np.ones((1, 4, 4), np.float32))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_overwrite_replaces_content(tmp_path):
    target = tmp_path / "x.tif"
    write(target, np.ones((1, 4, 4), np.uint8))
    write(target, np.full((1, 2, 3), 7, np.uint16))
    assert_same(read(target)[0], np.full((1, 2, 3), 7, np.uint16))


def test_bigtiff_switch(tmp_path, monkeypatch):
    monkeypatch.setattr(nio, "BIGTIFF_BYTES", 10)
    x = rand((1, 3, 8, 8), "uint16")
    write(tmp_path / "b.tif", x, ImageMeta("tiff", "uint16", spacing=(2.0, 1.0, 1.0), unit="um"))
    with tifffile.TiffFile(tmp_path / "b.tif") as tif:
        assert tif.is_bigtiff
    y, meta = read(tmp_path / "b.tif")
    assert_same(y, x)
    np.testing.assert_allclose(meta.spacing, (2.0, 1.0, 1.0))


# ---------------------------------------------------------------- import weight


def test_import_is_light():
    # the module file alone must not pull in the heavy readers; the package path must not pull torch
    code = (
        "import sys, importlib.util, neurodiff.errors\n"
        "spec = importlib.util.spec_from_file_location('io_probe', sys.argv[1])\n"
        "mod = sys.modules['io_probe'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "heavy = [m for m in ('torch', 'PIL', 'tifffile', 'nibabel') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import neurodiff.data.io\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    src = str(Path(nio.__file__).resolve().parents[2])  # .../src holding the neurodiff package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code, nio.__file__],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_png_larger_than_pillows_bomb_limit_is_read(tmp_path, monkeypatch):
    """Gigapixel masks: Pillow's decompression-bomb limit (179 Mpixel) does not apply; MAX_VOXELS does."""
    write(tmp_path / "m.png", np.full((1, 20, 30), 255, np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)      # stands for Pillow's limit, 20 x 30 is over it
    x, _ = read(tmp_path / "m.png")
    assert x.shape == (1, 20, 30) and Image.MAX_IMAGE_PIXELS == 100
    monkeypatch.setattr(nio, "MAX_VOXELS", 100)
    with pytest.raises(NeurodiffError, match="m.png: header says shape"):
        read(tmp_path / "m.png")


def test_stale_temp_files_and_zarr_folders_of_a_dead_process_are_removed(tmp_path):
    from neurodiff.data.temps import remove_stale_temps

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                              # its pid names no running process now
    (tmp_path / f".a.tmp{dead.pid}-0.png").write_bytes(b"half")
    (tmp_path / f".b.zarr.tmp{dead.pid}" / "0").mkdir(parents=True)   # a killed zarr write's folder
    (tmp_path / f".b.zarr.tmp{dead.pid}" / "0" / "c").write_bytes(b"chunk")
    (tmp_path / f".c.png.tmp-{os.getpid()}").write_bytes(b"mine")      # this process's own: kept
    (tmp_path / "d.png").write_bytes(b"done")
    assert remove_stale_temps(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".c.png.tmp-{os.getpid()}", "d.png"]


def test_stale_temp_clean_up_leaves_names_that_only_look_alike(tmp_path):
    from neurodiff.data.temps import remove_stale_temps

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    keep = [f".results.tmp{dead.pid}-backup", f".scan.tmp{dead.pid}.tif.partial", f".notes.tmp{dead.pid}x"]
    for name in keep:
        (tmp_path / name).mkdir()
    (tmp_path / f".x.tmp{dead.pid}-3.nii.gz").write_bytes(b"half")
    assert remove_stale_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
