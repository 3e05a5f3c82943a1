"""Validation: channel / rank / size mismatches, labels and covariates out of range or NaN, mask shape mismatch,
storage faults — each a one-line error naming the file or field; nothing already written is lost."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch

from neurodiff import config
from neurodiff.cli import main
from neurodiff.data import io
from neurodiff.data.datasets import ImageDataset
from neurodiff.errors import NeurodiffError
from neurodiff.nn.unet import Cond, UNet


def _one_line(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture(scope="module")
def run(slice_folder, tmp_path_factory):
    r = tmp_path_factory.mktemp("val") / "run"
    assert main(["train", "tiny", "--data", str(slice_folder), "--out", str(r), "--no-progress", "--set",
                 "train.total_nimg=16", "--set", "train.batch=8", "--set", "data.labels=folders"]) == 0
    return r


def _folder(tmp_path, arrays: dict):
    for name, a in arrays.items():
        io.write(tmp_path / "d" / name, a)
    return tmp_path / "d"


def test_channel_rank_and_size_mismatches_in_training_data_name_the_file(tmp_path):
    gray = np.zeros((1, 16, 16), np.uint8)
    cases = {"channels": ({"a.png": gray, "b.png": np.zeros((3, 16, 16), np.uint8)}, "b.png", "channels"),
             "rank": ({"a.npy": gray, "b.npy": np.zeros((1, 4, 16, 16), np.uint8)}, "b.npy", "2D files"),
             "size": ({"a.png": gray, "b.png": np.zeros((1, 20, 16), np.uint8)}, "b.png", "data.size")}
    for what, (arrays, name, word) in cases.items():
        root = _folder(tmp_path / what, arrays)
        cfg = config.load("tiny", [f"data.path={root}", "data.size=[]"])
        with pytest.raises(NeurodiffError) as e:
            ImageDataset(cfg.data)
        assert name in str(e.value) and word in str(e.value) and "\n" not in str(e.value), (what, str(e.value))


def test_net_inputs_of_the_wrong_rank_channels_or_size_are_errors():
    net = UNet(dims=2, channels=8, channel_mult=(1, 2), attn_levels=(), num_classes=2, num_scalars=1)
    t = torch.zeros(1)
    with pytest.raises(NeurodiffError, match="2D model"):
        net(torch.zeros(1, 1, 8, 8, 8), t)
    with pytest.raises(NeurodiffError, match="channels"):
        net(torch.zeros(1, 2, 8, 8), t)
    with pytest.raises(NeurodiffError, match="multiple of 2"):
        net(torch.zeros(1, 1, 9, 8), t)
    with pytest.raises(NeurodiffError, match="label out of range"):
        net(torch.zeros(1, 1, 8, 8), t, Cond(label=torch.tensor([5])))
    with pytest.raises(NeurodiffError, match=r"covariates: expected shape \[1, 1\]"):
        net(torch.zeros(1, 1, 8, 8), t, Cond(scalars=torch.zeros(1, 3)))


def test_label_and_covariates_out_of_range_or_nan(run, tmp_path, capsys):
    assert main(["sample", str(run), "--n", "1", "--out", str(tmp_path / "a"), "--label", "9"]) == 2
    _one_line(capsys, "--label 9", "out of range")
    assert main(["sample", str(run), "--n", "1", "--out", str(tmp_path / "b"), "--covariate", "age=1"]) == 2
    _one_line(capsys, "model expects none", "age")
    # a manifest covariate that is NaN or not a number: the file and line are named
    data = tmp_path / "m"
    io.write(data / "a.png", np.zeros((1, 16, 16), np.uint8))
    io.write(data / "b.png", np.zeros((1, 16, 16), np.uint8))
    for value, word in (("nan", "NaN"), ("old", "must be numbers")):
        (data / "m.csv").write_text(f"file,age\na.png,3\nb.png,{value}\n")
        assert main(["train", "tiny", "--data", str(data), "--out", str(tmp_path / f"r{value}"),
                     "--covariates", str(data / "m.csv")]) == 2
        _one_line(capsys, "m.csv", "line 3", word)


def test_covariate_values_when_sampling_must_be_finite(tmp_path, capsys, slice_folder):
    from neurodiff.tasks.generate import covariate_row

    cfg = config.load("tiny")
    cfg.data.meta = {"covariates": ["age"], "covariate_stats": {"age": {"mean": 50, "std": 10, "min": 20, "max": 80}}}
    assert covariate_row(cfg, {"age": 60}) == [1.0]
    with pytest.raises(NeurodiffError, match="covariate age: expected a finite number"):
        covariate_row(cfg, {"age": float("nan")})
    with pytest.raises(NeurodiffError, match="missing"):
        covariate_row(cfg, {"sex": 1})


def test_mask_shape_mismatch_and_bad_boxes_name_the_file(run, tmp_path, capsys, mni):
    img = tmp_path / "s.png"
    io.write(img, mni[40:104, 40:104, 90][None])
    mask = tmp_path / "m.png"
    io.write(mask, np.full((1, 32, 64), 255, np.uint8))
    assert main(["inpaint", str(run), "--image", str(img), "--mask", str(mask), "--out", str(tmp_path / "o.png"),
                 "--label", "0", "--no-progress"]) == 2
    _one_line(capsys, "mask")
    assert main(["inpaint", str(run), "--image", str(img), "--box", "0:999,0:5", "--out", str(tmp_path / "o.png"),
                 "--label", "0", "--no-progress"]) == 2
    _one_line(capsys, "--box")
    vol = tmp_path / "v.tif"
    io.write(vol, np.zeros((2, 64, 64), np.uint8))      # two channels for a one-channel model
    assert main(["inpaint", str(run), "--image", str(vol), "--box", "0:8,0:8", "--out", str(tmp_path / "o.tif"),
                 "--label", "0", "--no-progress"]) == 2
    _one_line(capsys, "channel")


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_disk_full_or_read_only_keeps_the_previous_checkpoint(slice_folder, tmp_path, monkeypatch, capsys, err):
    """The checkpoint write fails half-way (no space / read-only file system): one-line error, the previous
    checkpoint loads, no temporary file is left behind."""
    from neurodiff.train import state

    r = tmp_path / "r"
    args = ["train", "tiny", "--data", str(slice_folder), "--out", str(r), "--no-progress", "--set", "train.batch=8",
            "--set", "train.checkpoint_every_nimg=8", "--set", "train.preview_every_nimg=1000"]
    assert main(args + ["--set", "train.total_nimg=8"]) == 0
    before = state.list_checkpoints(r)
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)                         # the bytes land, then the disk is full
        raise OSError(err, "simulated")

    monkeypatch.setattr(state.torch, "save", failing_save)
    assert main(args + ["--set", "train.total_nimg=16", "--resume"]) == 2
    _one_line(capsys, "cannot write checkpoint", "previous one is kept")
    monkeypatch.undo()
    assert state.list_checkpoints(r) == before
    assert state.latest_checkpoint(r)["nimg"] == 8
    assert not [p for p in (r / "checkpoints").iterdir() if ".tmp" in p.name]


def test_output_write_errors_are_one_line_and_leave_no_partial_file(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s"
    assert main(["sample", str(run), "--n", "1", "--steps", "2", "--out", str(out), "--label", "0",
                 "--no-progress"]) == 0
    good = (out / "sample_000000.png").read_bytes()
    import os

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "replace", no_space)
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--out", str(out), "--label", "0",
                 "--no-progress"]) == 2
    _one_line(capsys, "sample_000001.png")
    monkeypatch.undo()
    assert (out / "sample_000000.png").read_bytes() == good
    assert not (out / "sample_000001.png").exists() and not [f for f in os.listdir(out) if ".tmp" in f]
    # an output folder that is a file
    (tmp_path / "file").write_text("x")
    assert main(["sample", str(run), "--n", "1", "--out", str(tmp_path / "file"), "--no-progress"]) == 2
    _one_line(capsys, "file")
