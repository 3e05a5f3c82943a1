"""TIFF region by region (data/tiffio.py): lazy reads give io.read's array, streamed writes give io.write's file."""

import math

import numpy as np
import pytest
import tifffile

from neurodiff.data import io, tiffio
from neurodiff.errors import NeurodiffError

REGIONS = [(slice(None), slice(3, 40), slice(5, 61)), (slice(0, 1), slice(0, 7), slice(50, 64)),
           (slice(None), slice(None), slice(None))]


def _check_regions(path, regions=REGIONS):
    whole, meta = io.read(path)
    lazy, lmeta = tiffio.open_lazy(path)
    assert not isinstance(lazy, np.ndarray) and lazy.shape == whole.shape and lazy.dtype == whole.dtype
    assert lmeta.spacing == meta.spacing and lmeta.unit == meta.unit
    for key in regions:
        key = key + (slice(None),) * (whole.ndim - len(key))
        got = lazy[key]
        assert got.dtype == whole.dtype and np.array_equal(got, whole[key]), key
    return lazy


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int16, np.int64])
def test_contiguous_tiff_regions_equal_the_whole_read(tmp_path, dtype):
    rng = np.random.default_rng(0)
    x = (rng.random((1, 48, 64)) * 1000).astype(dtype)
    io.write(tmp_path / "a.tif", x, io.ImageMeta("tiff", np.dtype(dtype).name, spacing=(0.5, 0.25), unit="um"))
    with tifffile.TiffFile(tmp_path / "a.tif") as t:
        assert t.series[0].dataoffset is not None         # the memory-map path
    lazy = _check_regions(tmp_path / "a.tif")
    assert lazy.dtype.type is np.dtype(dtype).type        # the canonical type (zarr refuses tifffile's 'q')


@pytest.mark.parametrize("kw", [dict(tile=(16, 16), compression="zlib"), dict(rowsperstrip=5, compression="zlib"),
                                dict(tile=(16, 16), byteorder=">")])
def test_tiled_striped_and_big_endian_tiff_regions(tmp_path, kw):
    pytest.importorskip("zarr")
    x = (np.arange(48 * 64, dtype=np.uint16) * 7).reshape(48, 64)
    tifffile.imwrite(tmp_path / "b.tif", x, **kw)
    lazy = _check_regions(tmp_path / "b.tif")
    assert lazy.shape == (1, 48, 64)


def test_rgb_rgba_multichannel_and_volume_layouts(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert _check_regions(tmp_path / "rgb.tif").shape == (3, 48, 64)
    rgba = rng.integers(0, 255, (48, 64, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    lazy = _check_regions(tmp_path / "rgba.tif", REGIONS + [(slice(1, 3), slice(0, 5), slice(0, 5))])
    assert lazy.shape == (3, 48, 64)
    grey = rng.integers(0, 255, (48, 64), dtype=np.uint8)              # grey + alpha: the alpha is dropped too
    tifffile.imwrite(tmp_path / "ga.tif", np.dstack([grey, np.full_like(grey, 255)]), photometric="minisblack",
                     extrasamples=["unassalpha"])
    assert np.array_equal(io.read(tmp_path / "ga.tif")[0], grey[None])
    assert _check_regions(tmp_path / "ga.tif").shape == (1, 48, 64)
    for extra, kept in ((["unspecified", "unassalpha"], 2), (["unassalpha", "unspecified"], 3)):
        tifffile.imwrite(tmp_path / "gx.tif", np.dstack([grey] * 3), photometric="minisblack", extrasamples=extra)
        assert io.read(tmp_path / "gx.tif")[0].shape == (kept, 48, 64)   # only a trailing alpha is dropped
        assert _check_regions(tmp_path / "gx.tif").shape == (kept, 48, 64)
    two = rng.random((2, 48, 64)).astype(np.float32)                   # [C, H, W]: ImageJ CYX
    io.write(tmp_path / "two.tif", two)
    assert _check_regions(tmp_path / "two.tif", REGIONS + [(slice(1, 2), slice(9, 10), slice(0, 64))]).shape == two.shape
    vol = rng.integers(0, 60000, (2, 5, 48, 64), dtype=np.uint16)      # [C, D, H, W]: ImageJ ZCYX on disk
    io.write(tmp_path / "vol.tif", vol, io.ImageMeta("tiff", "uint16", spacing=(2.0, 0.5, 0.5), unit="um"))
    _check_regions(tmp_path / "vol.tif", [(slice(None), slice(1, 4), slice(3, 40), slice(5, 61)),
                                          (slice(1, 2), slice(0, 1), slice(0, 48), slice(60, 64))])


@pytest.mark.parametrize("chunks", [None, 16])
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("shape,dtype,spacing", [((1, 300, 70), np.uint8, (0.5, 0.5)), ((3, 90, 70), np.uint8, None),
                                                 ((1, 5, 2000), np.uint8, None),
                                                 ((2, 90, 70), np.float32, (1.0, 2.0)),
                                                 ((2, 3, 40, 30), np.uint16, (3.0, 1.0, 1.0)),
                                                 ((1, 4, 40, 30), np.int32, (3.0, 1.0, 1.0))])
def test_streamed_write_gives_the_file_io_write_gives(tmp_path, monkeypatch, shape, dtype, spacing, big, chunks):
    if big:
        monkeypatch.setattr(io, "BIGTIFF_BYTES", 10)                  # the BigTIFF (non-ImageJ) layout
    rng = np.random.default_rng(2)
    x = (rng.random(shape) * 200).astype(dtype)
    meta = io.ImageMeta("tiff", np.dtype(dtype).name, spacing=spacing, unit="um" if spacing else None)
    io.write(tmp_path / "whole.tif", x, meta)
    monkeypatch.setattr(tiffio, "BAND_BYTES", 1000)                   # many bands; rows wider than a band
    reads = []

    class Lazy:       # a source that can only be read by region, and records the regions asked for
        shape, dtype = x.shape, x.dtype

        def __getitem__(self, key):
            reads.append(key)
            return x[key]

    if chunks:        # tall source chunks (a zarr store's): blocks are whole chunks, a band is cut in columns
        Lazy.chunks = (1,) * (len(shape) - 2) + (chunks, chunks)
    tiffio.write_from(tmp_path / "streamed.tif", Lazy(), meta)
    assert len(reads) > 1
    one_chunk = math.prod(shape[:-2]) * (chunks or 1) ** 2 * x.itemsize
    for key in reads:               # memory: a block holds at most a band's bytes, or one chunk per plane
        assert x[key].nbytes <= max(tiffio.BAND_BYTES, one_chunk)
        if chunks:
            assert key[-2].start % chunks == 0 and key[-1].start % chunks == 0
    assert (tmp_path / "streamed.tif").read_bytes() == (tmp_path / "whole.tif").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.tif", "whole.tif"]   # no temp left
    with tifffile.TiffFile(tmp_path / "streamed.tif") as t:
        assert t.is_bigtiff == big
    assert np.array_equal(io.read(tmp_path / "streamed.tif")[0], x)


def test_a_failed_streamed_write_leaves_no_file(tmp_path):
    class Broken:
        shape, dtype = (1, 20, 20), np.dtype(np.uint8)

        def __getitem__(self, key):
            raise OSError("disk gone")

    with pytest.raises(NeurodiffError, match="out.tif: cannot write TIFF"):
        tiffio.write_from(tmp_path / "out.tif", Broken(), io.ImageMeta("tiff", "uint8"))
    assert list(tmp_path.iterdir()) == []


def test_bad_tiffs_give_one_line_errors(tmp_path):
    with pytest.raises(NeurodiffError, match="nope.tif: no such file"):
        tiffio.open_lazy(tmp_path / "nope.tif")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(NeurodiffError, match="junk.tif: cannot read TIFF"):
        tiffio.open_lazy(tmp_path / "junk.tif")
    x = np.zeros((40, 40), np.uint8)
    io.write(tmp_path / "cut.tif", x[None])
    data = (tmp_path / "cut.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[:len(data) // 2])   # the header is whole, the pixels are not
    try:
        lazy, _ = tiffio.open_lazy(tmp_path / "cut.tif")
    except NeurodiffError as exc:
        assert "cut.tif" in str(exc)
    else:
        with pytest.raises(NeurodiffError, match="cut.tif: cannot read TIFF region"):
            lazy[:, 30:40, :]


def test_aperio_svs_is_read_with_its_microns_per_pixel_and_never_written(tmp_path):
    """Whole-slide histology: an SVS (tiled TIFF whose description starts 'Aperio') reads as RGB [3, H, W] with
    the spacing of its MPP, by region too; writing .svs is refused before any work, naming the file."""
    pytest.importorskip("zarr")
    rgb = np.random.default_rng(3).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    desc = "Aperio Image Library v11.2.1 \r\n56x40 (16x16) RAW/RGB|AppMag = 20|MPP = 0.4990|Filename = test"
    tifffile.imwrite(tmp_path / "slide.svs", rgb, photometric="rgb", tile=(16, 16), description=desc)
    x, meta = io.read(tmp_path / "slide.svs")
    assert x.shape == (3, 40, 56) and np.array_equal(x, np.moveaxis(rgb, -1, 0))
    assert meta.spacing == (0.499, 0.499) and meta.unit == "um"
    _check_regions(tmp_path / "slide.svs")
    for write in (lambda p: io.write(p, x), lambda p: tiffio.write_from(p, x, meta)):
        with pytest.raises(NeurodiffError, match=r"out.svs: SVS \(Aperio\) is read only; write a .tif"):
            write(tmp_path / "out.svs")
    assert not (tmp_path / "out.svs").exists()


def test_a_compression_without_its_codec_names_the_package(tmp_path, monkeypatch):
    """Whole-slide images are JPEG-tiled; tifffile decodes JPEG only with imagecodecs installed."""
    pytest.importorskip("zarr")
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((32, 32), np.uint8), tile=(16, 16), compression="zlib")
    missing = ValueError("<COMPRESSION.JPEG: 7> requires the 'imagecodecs' package")

    def no_codec(*a, **kw):
        raise missing

    lazy, _ = tiffio.open_lazy(tmp_path / "s.tif")
    lazy.read = no_codec
    with pytest.raises(NeurodiffError, match="s.tif: cannot read TIFF region .*needs pip install imagecodecs"):
        lazy[:, :8, :8]
    monkeypatch.setitem(io._READERS, "tiff", no_codec)
    with pytest.raises(NeurodiffError, match="s.tif: cannot read TIFF: its compression needs pip install imagecodecs"):
        io.read(tmp_path / "s.tif")


def test_pyramids_are_read_at_full_resolution_by_region(tmp_path):
    """Whole-slide images and OME pyramids hold reduced levels too: the full resolution is read, by region."""
    pytest.importorskip("zarr")
    rng = np.random.default_rng(4)
    base = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    desc = "Aperio Image Library v11.2.1 \r\n96x64 (16x16) RAW/RGB|AppMag = 20|MPP = 0.25|Filename = p"
    with tifffile.TiffWriter(tmp_path / "pyr.svs") as tw:            # baseline, thumbnail, two reduced levels
        tw.write(base, photometric="rgb", tile=(16, 16), compression="zlib", metadata=None, description=desc)
        tw.write(base[::8, ::8], photometric="rgb", metadata=None, description="Aperio Image Library thumbnail")
        for f in (2, 4):
            tw.write(base[::f, ::f], photometric="rgb", tile=(16, 16), compression="zlib", metadata=None,
                     description=f"Aperio Image Library v11.2.1 \r\n96x64 -> {96 // f}x{64 // f}")
    with tifffile.TiffWriter(tmp_path / "pyr.tif") as tw:             # SubIFD pyramid
        tw.write(base, photometric="rgb", tile=(16, 16), compression="zlib", subifds=1)
        tw.write(base[::2, ::2], photometric="rgb", tile=(16, 16), compression="zlib", subfiletype=1)
    for name in ("pyr.svs", "pyr.tif"):
        with tifffile.TiffFile(tmp_path / name) as t:
            assert len(t.series[0].levels) > 1, name
        lazy = _check_regions(tmp_path / name)
        assert lazy.shape == (3, 64, 96) and np.array_equal(lazy[:, 5:30, 7:70], np.moveaxis(base, -1, 0)[:, 5:30, 7:70])
        lazy.close()
    assert tiffio.open_lazy(tmp_path / "pyr.svs")[1].spacing == (0.25, 0.25)


def test_lazy_views_close_their_files(tmp_path):
    pytest.importorskip("zarr")
    tifffile.imwrite(tmp_path / "t.tif", np.zeros((32, 32), np.uint16), tile=(16, 16), compression="zlib")
    io.write(tmp_path / "c.tif", np.zeros((1, 32, 32), np.uint16))
    tiled, _ = tiffio.open_lazy(tmp_path / "t.tif")
    assert tiled.tif is not None and not tiled.tif.filehandle.closed
    handle = tiled.tif.filehandle
    tiled.close()
    assert handle.closed and tiled.tif is None
    contiguous, _ = tiffio.open_lazy(tmp_path / "c.tif")    # a memory map per region: no file held open
    assert contiguous.tif is None and contiguous[:, :4, :4].shape == (1, 4, 4)
