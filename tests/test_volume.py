"""Slice-by-slice volumes: context slices in the data, the volume task, its files and coherence measures."""

import csv

import numpy as np
import pytest
import torch

from neurodiff import config
from neurodiff.cli import main
from neurodiff.data import io
from neurodiff.data.datasets import ImageDataset
from neurodiff.metrics.volume import adjacent_similarity, depth_correlation, evaluate_volumes, through_plane_smoothness
from neurodiff.tasks.volume import context_image, depth_label

VOLUME_SET = ["data.kind=slices", "data.axis=2", "data.depth_bins=4", "data.context_slices=2",
              "data.crop_foreground=false", "data.size=[16,16]", "train.total_nimg=64", "train.batch=8", "sample.steps=3",
              "train.checkpoint_every_nimg=64", "train.preview_every_nimg=64"]


def test_context_image_marks_missing_slices():
    s = torch.randn(2, 4, 4)                     # two context slices, one channel each
    img = context_image(s, [True, False])
    assert img.shape == (4, 4, 4)
    assert torch.equal(img[0], s[0]) and (img[1] == -1).all()
    assert (img[2] == 1).all() and (img[3] == 0).all()


def test_dataset_gives_the_preceding_slices_as_context(volume_folder):
    cfg = config.load("tiny", [*VOLUME_SET, "data.context_drop_prob=0"])
    cfg.data.path = str(volume_folder)
    ds = ImageDataset(cfg.data)
    assert ds.meta["num_slices"] == 16 and ds.meta["slice_spacing"] == 6.0
    first, third = ds[(0, 0)], ds[(2, 0)]            # slices 0 and 2 of the first volume
    assert first["x"].shape == (1, 16, 16) and first["cond_image"].shape == (4, 16, 16)
    assert (first["cond_image"][:2] == -1).all() and (first["cond_image"][2:] == 0).all()
    assert torch.equal(third["cond_image"][0], ds[(1, 0)]["x"][0])   # nearest first
    assert torch.equal(third["cond_image"][1], first["x"][0])
    assert (third["cond_image"][2:] == 1).all()
    assert int(third["label"]) == depth_label(2, 16, 4)
    cfg.data.context_drop_prob = 1.0
    dropped = ImageDataset(cfg.data)[(2, 0)]["cond_image"]
    assert (dropped[:2] == -1).all() and (dropped[2:] == 0).all()


@pytest.fixture(scope="module")
def volume_run(volume_folder, tmp_path_factory):
    run = tmp_path_factory.mktemp("volrun") / "run"
    args = ["train", "tiny", "--data", str(volume_folder), "--out", str(run), "--no-progress"]
    for s in VOLUME_SET:
        args += ["--set", s]
    assert main(args) == 0
    return run


def test_volume_command_writes_stacks_with_affine_and_is_batch_invariant(volume_run, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["volume", str(volume_run), "--n", "3", "--slices", "5", "--out", str(a), "--no-progress"]) == 0
    assert main(["volume", str(volume_run), "--n", "3", "--slices", "5", "--batch", "1", "--out", str(b),
                 "--no-progress"]) == 0
    files = sorted(p.name for p in a.glob("volume_*"))
    assert files == ["volume_0000.nii.gz", "volume_0001.nii.gz", "volume_0002.nii.gz"]
    x, meta = io.read(a / files[0])
    assert x.shape == (1, 16, 16, 5) and x.dtype == np.uint8
    assert np.allclose(np.abs(np.asarray(meta.affine))[:3, :3].diagonal(), [6.0, 6.0, 6.0 * 16 / 5])
    for f in files:
        assert np.array_equal(io.read(a / f)[0], io.read(b / f)[0]), f
    rows = list(csv.DictReader(open(a / "manifest.csv")))
    assert [r["file"] for r in rows] == files and rows[0]["slices"] == "5"
    assert main(["volume", str(volume_run), "--n", "3", "--slices", "6", "--out", str(a), "--no-progress"]) == 2


def test_a_model_without_context_cannot_build_volumes(tmp_path, slice_folder, capsys):
    run = tmp_path / "plain"
    assert main(["train", "tiny", "--data", str(slice_folder), "--out", str(run), "--no-progress",
                 "--set", "train.total_nimg=8", "--set", "train.batch=8"]) == 0
    assert main(["volume", str(run), "--n", "1", "--slices", "3", "--out", str(tmp_path / "v")]) == 2
    assert "data.context_slices" in capsys.readouterr().err


def test_coherence_measures_tell_smooth_from_shuffled_stacks(tmp_path, mni):
    real = mni[40:160:2, 40:200:2, 40:140].astype(np.float32)        # [X, Y, Z], axial along Z
    stack = np.moveaxis(real, 2, 0)
    shuffled = stack[np.random.default_rng(0).permutation(len(stack))]
    assert adjacent_similarity(stack).mean() > adjacent_similarity(shuffled).mean() + 0.1
    assert through_plane_smoothness(stack) < through_plane_smoothness(shuffled)
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    io.write(tmp_path / "real" / "r.tif", stack[None].astype(np.uint8))
    io.write(tmp_path / "fake" / "f.tif", shuffled[None].astype(np.uint8))
    io.write(tmp_path / "fake" / "g.tif", stack[None].astype(np.uint8))
    m = evaluate_volumes(tmp_path / "real", tmp_path / "fake", tmp_path / "out", axis=0)
    assert m["adjacent_similarity_fake"] < m["adjacent_similarity_real"]
    assert m["depth"]["pearson_r_real_heldout"] > 0.9
    assert 0.2 < m["depth"]["pearson_r"] < 0.9          # half the generated set is in the wrong order
    assert (tmp_path / "out" / "report.html").read_text().count("<polyline") == 2


def test_depth_regressor_ignores_brightness_and_catches_shuffled_depth():
    rng = np.random.default_rng(0)
    z = np.linspace(0, 1, 60)[:, None, None]
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    real = (np.exp(-((xx - z) ** 2 + (yy - 0.5) ** 2) / 0.02) + 0.05 * rng.random((60, 32, 32))).astype(np.float32)
    brighter = real * 0.6 + 0.3                       # same anatomy per depth, other contrast and offset
    assert depth_correlation([real], [brighter])["pearson_r"] > 0.98
    shuffled = brighter[rng.permutation(60)]          # right slices, wrong depths
    assert abs(depth_correlation([real], [shuffled])["pearson_r"]) < 0.5
