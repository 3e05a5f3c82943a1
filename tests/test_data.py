import numpy as np
import pytest
import torch

from neurodiff import config
from neurodiff.data import io
from neurodiff.data.datasets import ImageDataset
from neurodiff.data.normalize import Normalizer, fit_normalizer
from neurodiff.errors import NeurodiffError


def data_cfg(path, **kw):
    cfg = config.load("tiny", [f"data.path={path}"]).data
    cfg.size = []
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_uint16_survives_read_normalise_denormalise_write_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 65536, (1, 37, 41), dtype=np.uint16)
    x[0, 0, :2] = [0, 65535]
    io.write(tmp_path / "a.tif", x)
    a, meta = io.read(tmp_path / "a.tif")
    norm = fit_normalizer(config.NormalizerConfig(kind="minmax"), [a], meta.dtype)
    y = norm.normalize(a)
    assert y.dtype == np.float32 and y.min() == -1.0 and y.max() == 1.0
    io.write(tmp_path / "b.tif", norm.denormalize(y, meta.dtype), meta)
    b, meta_b = io.read(tmp_path / "b.tif")
    assert meta_b.dtype == "uint16" and np.array_equal(a, b)
    r = Normalizer("range", 0, 65535)  # the dtype range is exact too, on torch tensors as well
    assert np.array_equal(r.denormalize(r.normalize(torch.from_numpy(a.astype(np.int32))), "uint16"), a)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int64", "uint64"])
def test_denormalising_to_any_integer_type_rounds_and_clips(dtype):
    n = Normalizer("minmax", -100.0, 155.0)          # 10.9 in data units, and the lowest value, below 0
    y = n.denormalize(np.array([(10.9 + 100) / 255 * 2 - 1, -1.0]), dtype)
    assert y.dtype == np.dtype(dtype) and y.tolist() == [11, max(-100, np.iinfo(dtype).min)]


def test_percentile_normaliser_clips_and_is_fitted_on_all_files():
    a, b = np.arange(100, dtype=np.float32), np.arange(100, 200, dtype=np.float32)
    n = fit_normalizer(config.NormalizerConfig(kind="percentile", percentiles=[1, 99]), [a, b], "float32")
    assert 1 < n.lo < 3 and 196 < n.hi < 198
    assert n.normalize(np.array([0.0, 1000.0])).tolist() == pytest.approx([-1.0, 1.0], abs=1e-6)


def test_folder_labels_and_augmentation_are_seeded(slice_folder):
    ds = ImageDataset(data_cfg(slice_folder, labels="folders", hflip=True, vflip=True, rot90=True))
    assert ds.class_names == ["high", "low"] and len(ds) == 8
    labels = sorted(int(ds[(i, 0)]["label"]) for i in range(8))
    assert labels == [0, 0, 0, 0, 1, 1, 1, 1]
    a, b = ds[(3, 123)]["x"], ds[(3, 123)]["x"]
    assert torch.equal(a, b) and a.shape == (1, 32, 32)
    variants = {ds[(3, s)]["x"].numpy().tobytes() for s in range(20)}
    assert len(variants) > 2  # flips/rotations differ between seeds
    assert ds.meta["format"] == "png" and ds.meta["dtype"] == "uint8"


def test_manifest_labels_and_covariates(slice_folder, tmp_path):
    files = sorted(p.relative_to(slice_folder) for p in slice_folder.rglob("*.png"))
    lines = ["file,label,age,volume"] + [f"{f},{'AD' if i % 2 else 'CN'},{60 + i},{1.5 - i / 10}"
                                         for i, f in enumerate(files)]
    (slice_folder / "m.csv").write_text("\n".join(lines))
    ds = ImageDataset(data_cfg(slice_folder, labels="manifest", manifest="m.csv", covariates=["age", "volume"]))
    item = ds[(1, 0)]
    assert ds.class_names == ["AD", "CN"] and int(item["label"]) == 0
    st = ds.meta["covariate_stats"]     # covariates are standardised by the training set's mean and spread
    raw = [61.0, 1.4]
    assert torch.allclose(item["scalars"], torch.tensor([(v - st[c]["mean"]) / st[c]["std"] for v, c in
                                                         zip(raw, ["age", "volume"])]))
    (slice_folder / "bad.csv").write_text("file,label,age\nlow/nothere.png,AD,3\n")
    with pytest.raises(NeurodiffError, match="nothere.png"):
        ImageDataset(data_cfg(slice_folder, labels="manifest", manifest="bad.csv", covariates=["age"]))
    (slice_folder / "nan.csv").write_text(f"file,label,age\n{files[0]},AD,nan\n")
    with pytest.raises(NeurodiffError, match="line 2"):
        ImageDataset(data_cfg(slice_folder, labels="manifest", manifest="nan.csv", covariates=["age"]))


def test_volumes_whole_and_random_crops(volume_folder):
    ds = ImageDataset(data_cfg(volume_folder, kind="volumes"))
    assert ds[(0, 0)]["x"].shape == (1, 16, 16, 16)
    assert ds.meta["format"] == "nifti" and ds.meta["spacing"] == [6.0, 6.0, 6.0]
    crops = ImageDataset(data_cfg(volume_folder, kind="volumes", crop=[8, 8, 8]))
    a, b = crops[(0, 1)]["x"], crops[(0, 2)]["x"]
    assert a.shape == (1, 8, 8, 8) and not torch.equal(a, b)


def test_slices_with_depth_bins_and_position(volume_folder):
    ds = ImageDataset(data_cfg(volume_folder, kind="slices", axis=2, depth_bins=4, depth_scalar=True))
    assert len(ds) == 8 * 16
    first, last = ds[(0, 0)], ds[(15, 0)]
    assert first["x"].shape == (1, 16, 16)
    assert int(first["label"]) == 0 and int(last["label"]) == 3
    assert first["scalars"].item() == 0.0 and last["scalars"].item() == 1.0
    assert ds.meta["spacing"] == [6.0, 6.0]


def test_resize_fit_keeps_aspect_and_pads_with_background(tmp_path):
    x = np.full((1, 20, 40), 200, dtype=np.uint8)
    x[0, 0, 0] = 0
    io.write(tmp_path / "a.png", x)
    ds = ImageDataset(data_cfg(tmp_path, size=[32, 32], resize_mode="fit"))
    y = ds[(0, 0)]["x"][0]
    assert y.shape == (32, 32)
    assert torch.all(y[:7] == -1) and torch.all(y[-7:] == -1)   # 16 rows of image centred in 32
    assert y[16, 16] > 0.9


@pytest.mark.parametrize("setup,msg", [
    (lambda p: None, "no image files"),
    (lambda p: (p / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage"), "x.png"),
])
def test_bad_folders_name_the_problem(tmp_path, setup, msg):
    setup(tmp_path)
    with pytest.raises(NeurodiffError, match=msg):
        ImageDataset(data_cfg(tmp_path))


def test_missing_folder_and_wrong_rank(tmp_path, volume_folder):
    with pytest.raises(NeurodiffError, match="no such file or folder"):
        ImageDataset(data_cfg(tmp_path / "nope"))
    with pytest.raises(NeurodiffError, match="expects 2D files"):
        ImageDataset(data_cfg(volume_folder, kind="images"))


def test_nan_voxels_are_an_error_naming_the_file(tmp_path):
    x = np.zeros((1, 8, 8), np.float32)
    x[0, 2, 2] = np.nan
    io.write(tmp_path / "n.tif", x)
    with pytest.raises(NeurodiffError, match="n.tif.*NaN"):
        ImageDataset(data_cfg(tmp_path))


def test_numeric_class_folders_sort_by_value_and_resolve_by_name(tmp_path):
    from neurodiff.tasks.generate import resolve_label

    for name in ("2", "10", "1"):
        io.write(tmp_path / name / "a.png", np.full((1, 8, 8), int(name), np.uint8))
    ds = ImageDataset(data_cfg(tmp_path, labels="folders"))
    assert ds.class_names == ["1", "2", "10"]
    cfg = config.load("tiny")
    cfg.model.num_classes, cfg.data.meta = 3, {"class_names": ds.class_names}
    assert resolve_label(cfg, "10") == 2 and resolve_label(cfg, "2") == 1


def test_depth_position_comes_before_manifest_covariates(volume_folder, tmp_path):
    files = sorted(p.name for p in volume_folder.glob("*.nii.gz"))
    (volume_folder / "cov.csv").write_text("file,age\n" + "\n".join(f"{f},{50 + i}" for i, f in enumerate(files)))
    ds = ImageDataset(data_cfg(volume_folder, kind="slices", axis=0, depth_scalar=True, manifest="cov.csv",
                               covariates=["age"]))
    item = ds[(16 + 15, 0)]   # second volume, last slice
    st = ds.meta["covariate_stats"]["age"]      # depth in [0, 1] first, then the standardised covariate
    assert item["scalars"].tolist() == pytest.approx([1.0, (51.0 - st["mean"]) / st["std"]])


def test_rot90_on_non_square_images_keeps_the_shape(tmp_path):
    io.write(tmp_path / "a.png", np.arange(8 * 12, dtype=np.uint8).reshape(1, 8, 12))
    ds = ImageDataset(data_cfg(tmp_path, rot90=True))
    assert {tuple(ds[(0, s)]["x"].shape) for s in range(16)} == {(1, 8, 12)}


def test_mixed_sizes_without_resize_name_both_files(tmp_path):
    io.write(tmp_path / "a.png", np.zeros((1, 8, 8), np.uint8))
    io.write(tmp_path / "b.png", np.ones((1, 8, 12), np.uint8))
    with pytest.raises(NeurodiffError, match="b.png.*a.png.*data.size"):
        ImageDataset(data_cfg(tmp_path))
