"""Zarr images: round trip with metadata, OME-Zarr reading, lazy regions, atomic writes, clear errors."""

import numpy as np
import pytest

from neurodiff.data import io, zarrio
from neurodiff.errors import NeurodiffError

zarr = pytest.importorskip("zarr")


@pytest.mark.parametrize("shape,dtype", [((1, 40, 30), np.uint16), ((2, 5, 12, 9), np.float32), ((3, 20, 20), np.uint8)])
def test_zarr_round_trip_keeps_dtype_shape_and_spacing(tmp_path, shape, dtype):
    x = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    sp = tuple(0.5 + k for k in range(len(shape) - 1))
    io.write(tmp_path / "a.zarr", x, io.ImageMeta("zarr", np.dtype(dtype).name, spacing=sp, unit="um",
                                                    channel_names=[f"c{k}" for k in range(shape[0])]))
    y, meta = io.read(tmp_path / "a.zarr")
    assert y.dtype == dtype and np.array_equal(x, y)
    assert meta.spacing == pytest.approx(sp) and meta.unit == "um" and meta.channel_names == [f"c{k}" for k in
                                                                                             range(shape[0])]
    io.write(tmp_path / "a.zarr", x[:, ::2], None)          # replacing an existing image leaves no temp folders
    assert io.read(tmp_path / "a.zarr")[0].shape == x[:, ::2].shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_plain_2d_array_and_ome_zarr_group_are_read(tmp_path):
    a = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10)
    zarr.create_array(store=str(tmp_path / "plain.zarr"), data=a)
    assert np.array_equal(io.read(tmp_path / "plain.zarr")[0], a[None])
    for depth, level in ((3, "0"), (1, "s0")):               # [t, c, z, y, x]: a stack, and one plane (2D)
        g = zarr.open_group(store=str(tmp_path / f"ome{depth}.zarr"), mode="w")
        g.create_array(level, data=np.stack([a + k for k in range(depth)])[None, None])
        g.attrs["ome"] = {"multiscales": [{"datasets": [{"path": level, "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 2.0, 0.25, 0.25]}]}]}]}
        y, meta = io.read(tmp_path / f"ome{depth}.zarr")
        if depth == 3:
            assert y.shape == (1, 3, 12, 10) and np.array_equal(y[0, 2], a + 2)
            assert meta.spacing == pytest.approx((2.0, 0.25, 0.25))
        else:                                                # as bioformats2raw writes a 2D image
            assert y.shape == (1, 12, 10) and np.array_equal(y[0], a)
            assert meta.spacing == pytest.approx((0.25, 0.25))
            lazy, _ = zarrio.open_lazy(tmp_path / "ome1.zarr")
            assert np.array_equal(lazy[:, 3:5, 2:9], a[None, 3:5, 2:9]) and np.array_equal(lazy[0], a)


def test_lazy_regions_read_only_what_is_asked(tmp_path):
    x = np.random.default_rng(1).integers(0, 60000, (1, 300, 260)).astype(np.uint16)
    io.write(tmp_path / "big.zarr", x)
    lazy, _ = zarrio.open_lazy(tmp_path / "big.zarr")
    assert not isinstance(lazy, np.ndarray) and lazy.shape == x.shape
    assert np.array_equal(np.asarray(lazy[:, 100:140, 7:9]), x[:, 100:140, 7:9])
    out = zarrio.create(tmp_path / "copy.zarr", lazy.shape, lazy.dtype)
    zarrio.copy_regions(lazy, out, step=128)
    assert not (tmp_path / "copy.zarr").exists()             # nothing at the destination before commit
    zarrio.commit(tmp_path / "copy.zarr")
    assert np.array_equal(io.read(tmp_path / "copy.zarr")[0], x)


def test_zarr_errors_are_one_line(tmp_path):
    with pytest.raises(NeurodiffError, match="no such zarr folder"):
        io.read(tmp_path / "missing.zarr")
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(NeurodiffError, match="must be a folder"):
        io.read(tmp_path / "file.zarr")
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(NeurodiffError, match="cannot read ZARR") as e:
        io.read(tmp_path / "junk.zarr")
    assert "\n" not in str(e.value)
    zarr.open_group(store=str(tmp_path / "group.zarr"), mode="w")
    with pytest.raises(NeurodiffError, match="without an array '0'"):
        io.read(tmp_path / "group.zarr")
    zarr.create_array(store=str(tmp_path / "c.zarr"), data=np.zeros((4, 4), np.complex64))
    with pytest.raises(NeurodiffError, match="unsupported data type"):
        io.read(tmp_path / "c.zarr")
