"""Paired translation: data matched by name or by channel roles, the diffusion model and its regression baseline,
mean/median/std/MAD maps in the input's format, and the uncertainty calibration metrics."""

import csv

import numpy as np
import pytest
import torch

from neurodiff import config
from neurodiff.cli import main
from neurodiff.data import io
from neurodiff.data.datasets import ImageDataset
from neurodiff.errors import NeurodiffError
from neurodiff.metrics.uncertainty import ause, sparsification, spearman

TINY = ["--set", "model.channels=16", "--set", "model.channel_mult=[1,2]", "--set", "model.num_res_blocks=1",
        "--set", "model.attn_levels=[1]", "--set", "model.num_heads=2", "--set", "train.batch=8",
        "--set", "train.total_nimg=32", "--set", "train.warmup_nimg=8", "--no-progress"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, mni):
    """source/: 6 T1 slices (32x32 PNG); target/: a monotone map of each (uint16 TIFF with spacing), same names."""
    root = tmp_path_factory.mktemp("pairs")
    for z in range(60, 120, 10):
        t1 = np.ascontiguousarray(mni[18:178:5, 20:212:6, z][:32, :32])
        io.write(root / "source" / f"s{z}.png", t1[None])
        target = (np.sqrt(t1.astype(np.float64) / 255) * 60000).astype(np.uint16)
        io.write(root / "target" / f"s{z}.tif", target[None],
                 io.ImageMeta("tiff", "uint16", spacing=(0.5, 0.5), unit="mm"))
    return root


def _cfg(root, **data):
    cfg = config.load("translate", [f"data.path={root}"])
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def test_pairs_are_matched_by_name_and_flipped_together(pairs):
    cfg = _cfg(pairs)
    ds = ImageDataset(cfg.data)
    assert ds.num_source_channels == 1 and ds.channels == 1 and len(ds) == 6
    assert ds.meta["source_normalizer"] != ds.meta["normalizer"]      # each side has its own units
    for seed in range(6):   # with random flips, source and target stay aligned
        it = ds[(2, seed)]
        src, tgt = it["cond_image"][0].numpy(), it["x"][0].numpy()
        # the target is a monotone function of the source: same ordering of pixels
        assert np.corrcoef(np.argsort(np.argsort(src.ravel())), np.argsort(np.argsort(tgt.ravel())))[0, 1] > 0.99


def test_pair_errors_name_the_file(pairs, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(pairs, bad)
    (bad / "source" / "s60.png").unlink()
    with pytest.raises(NeurodiffError, match="s60.tif: no source file of that name"):
        ImageDataset(_cfg(bad).data)
    io.write(bad / "source" / "s60.png", np.zeros((1, 16, 32), np.uint8))
    with pytest.raises(NeurodiffError, match="does not match its target"):
        ImageDataset(_cfg(bad).data)
    io.write(bad / "source" / "s60.tif", np.zeros((1, 32, 32), np.uint16), io.ImageMeta("tiff", "uint16",
                                                                                      spacing=(2.0, 2.0), unit="mm"))
    (bad / "source" / "s60.png").unlink()
    with pytest.raises(NeurodiffError, match="voxel spacing"):
        ImageDataset(_cfg(bad).data)
    with pytest.raises(NeurodiffError, match="either data.source"):
        config.load("translate", ["data.source_channels=[0]"])
    with pytest.raises(NeurodiffError, match="'regression' needs paired data"):
        config.load("tiny", ["train.objective=regression"])


def test_channel_roles_by_index_and_name(tmp_path, mni):
    for z in range(60, 100, 10):
        sl = np.ascontiguousarray(mni[18:178:5, 20:212:6, z][:32, :32]).astype(np.float32)
        io.write(tmp_path / "d" / f"m{z}.npz", np.stack([sl, 255 - sl, sl * 2]),
                 io.ImageMeta("npz", "float32", channel_names=["brightfield", "dapi", "actin"]))
    for roles in ([0], ["brightfield"]):
        cfg = _cfg(tmp_path / "d", source="", target="", source_channels=roles)
        ds = ImageDataset(cfg.data)
        it = ds[(0, 0)]
        assert it["cond_image"].shape[0] == 1 and it["x"].shape[0] == 2 and ds.channels == 2
    with pytest.raises(NeurodiffError, match="no channel named 'gfp'"):
        ImageDataset(_cfg(tmp_path / "d", source="", target="", source_channels=["gfp"]).data)
    with pytest.raises(NeurodiffError, match="leaves no target channel"):
        ImageDataset(_cfg(tmp_path / "d", source="", target="", source_channels=[0, 1, 2]).data)


def test_translate_writes_mean_median_std_mad_in_the_inputs_format(pairs, tmp_path, capsys, model_loads):
    run = tmp_path / "t"
    assert main(["train", "translate", "--data", str(pairs), "--out", str(run), *TINY]) == 0
    out = tmp_path / "pred"
    assert main(["translate", str(run), "--input", str(pairs / "source"), "--samples", "4", "--steps", "4",
                 "--batch", "3", "--save-samples", "--out", str(out), "--no-progress"]) == 0
    assert "4 samples each" in capsys.readouterr().out
    mean, _ = io.read(out / "mean" / "s60.png")                 # PNG in, PNG out, in the target's dtype
    std, smeta = io.read(out / "std" / "s60.tif")               # spread maps need floats: TIFF
    mad, _ = io.read(out / "mad" / "s60.tif")
    samples = np.stack([io.read(out / "samples" / f"sample_{k:03d}" / "s60.png")[0] for k in range(4)])
    assert mean.dtype == np.uint16 and mean.shape == (1, 32, 32) and std.dtype == np.float32
    assert std.max() > 0 and (std >= 0).all() and (mad >= 0).all()
    s = samples.astype(np.float64)
    assert np.abs(mean - s.mean(0)).max() <= 1.0                     # rounding of the float mean only
    assert np.allclose(std, s.std(0, ddof=1), atol=1.5)
    with open(out / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[0]["samples"] == "4"
    # the same seed gives the same maps; --batch changes only the last bits (batched network calls)
    out2 = tmp_path / "pred2"
    assert main(["translate", str(run), "--input", str(pairs / "source" / "s60.png"), "--samples", "4",
                 "--steps", "4", "--batch", "4", "--out", str(out2), "--no-progress"]) == 0
    assert np.abs(io.read(out2 / "mean" / "s60.png")[0].astype(int) - mean.astype(int)).max() <= 2
    # a larger input of odd size: padded for the net, sampled in blended tiles, cropped back
    big = np.tile(io.read(pairs / "source" / "s60.png")[0], (1, 2, 3))[:, :41, :70]
    io.write(tmp_path / "big" / "b.png", big)
    assert main(["translate", str(run), "--input", str(tmp_path / "big"), "--samples", "2", "--steps", "2",
                 "--tile", "32", "--out", str(tmp_path / "pbig"), "--no-progress"]) == 0
    assert io.read(tmp_path / "pbig" / "mean" / "b.png")[0].shape == (1, 41, 70)
    model_loads.clear()                              # the model goes where dist.init says (the GPU if any)
    assert main(["translate", str(run), "--input", str(pairs / "source" / "s60.png"), "--samples", "2", "--steps",
                 "2", "--out", str(tmp_path / "dev"), "--no-progress"]) == 0
    assert model_loads == [torch.device("cpu", 0)]
    assert io.read(tmp_path / "pbig" / "std" / "b.tif")[0].shape == (1, 41, 70)
    assert main(["translate", str(run), "--input", str(tmp_path / "nothing"), "--out", str(out2)]) == 2
    io.write(tmp_path / "rgb.png", np.zeros((3, 32, 32), np.uint8))
    assert main(["translate", str(run), "--input", str(tmp_path / "rgb.png"), "--out", str(out2)]) == 2
    assert "the model's source has 1" in capsys.readouterr().err


def test_regression_baseline_is_the_same_net_and_deterministic(pairs, tmp_path, capsys):
    runs = {}
    for preset in ("translate", "translate-regression"):
        runs[preset] = tmp_path / preset
        assert main(["train", preset, "--data", str(pairs), "--out", str(runs[preset]), *TINY]) == 0
    from neurodiff.train.state import load_model
    a, b = (load_model(runs[p]) for p in runs)
    assert sum(p.numel() for p in a.net.parameters()) == sum(p.numel() for p in b.net.parameters())
    for k in (1, 2):
        assert main(["translate", str(runs["translate-regression"]), "--input", str(pairs / "source"),
                     "--out", str(tmp_path / f"r{k}"), "--no-progress"]) == 0
    assert "1 prediction each" in capsys.readouterr().out
    assert not (tmp_path / "r1" / "std").exists()
    assert np.array_equal(io.read(tmp_path / "r1" / "mean" / "s70.png")[0],
                          io.read(tmp_path / "r2" / "mean" / "s70.png")[0])


def test_regression_training_fits_a_pixelwise_map(pairs, tmp_path):
    run = tmp_path / "fit"
    args = [a if a != "train.total_nimg=32" else "train.total_nimg=1600" for a in TINY]
    assert main(["train", "translate-regression", "--data", str(pairs), "--out", str(run), *args,
                 "--set", "train.lr=2e-3", "--set", "train.log_every_nimg=400"]) == 0
    import json
    losses = [json.loads(line)["loss"] for line in open(run / "metrics.jsonl") if '"loss"' in line]
    assert losses[-1] < 0.5 * losses[0]


def test_uncertainty_metrics_on_known_rankings():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((64, 64))
    assert spearman(np.abs(e), np.abs(e)) == pytest.approx(1.0)
    assert ause(np.abs(e), e) == pytest.approx(0.0, abs=1e-12)       # the oracle itself
    noise = rng.random((64, 64))
    assert abs(spearman(noise, np.abs(e))) < 0.1
    assert ause(noise, e) > 0.2
    cu, co = sparsification(noise, e)
    assert cu[0] == pytest.approx(1.0) and co[-1] < cu[-1]


def test_evaluate_paired_with_uncertainty_maps(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for k in range(3):
        gt = rng.random((1, 24, 24)).astype(np.float32) * 100
        err_scale = rng.random((1, 24, 24)).astype(np.float32) * 10
        io.write(tmp_path / "gt" / f"i{k}.tif", gt)
        io.write(tmp_path / "mean" / f"i{k}.tif", gt + err_scale * rng.standard_normal(gt.shape).astype(np.float32))
        io.write(tmp_path / "std" / f"i{k}.tif", err_scale)          # an honest spread: errors scale with it
    assert main(["evaluate", "--task", "paired", "--real", str(tmp_path / "gt"), "--fake", str(tmp_path / "mean"),
                 "--uncertainty", str(tmp_path / "std"), "--out", str(tmp_path / "rep")]) == 0
    assert "Spearman(std, |error|)" in capsys.readouterr().out
    import json
    u = json.load(open(tmp_path / "rep" / "metrics.json"))["uncertainty"]
    assert u["spearman_pooled"] > 0.3 and u["ause_pooled"] < 0.5 and len(u["per_file"]) == 3
    assert "Uncertainty calibration" in (tmp_path / "rep" / "report.html").read_text()
    for k in range(3):   # scored inside a mask only
        m = np.zeros((1, 24, 24), np.uint8)
        m[:, :, 12:] = 255
        io.write(tmp_path / "mask" / f"i{k}.tif", m)   # named like the images (paired metrics use it too)
    assert main(["evaluate", "--task", "paired", "--real", str(tmp_path / "gt"), "--fake", str(tmp_path / "mean"),
                 "--uncertainty", str(tmp_path / "std"), "--mask", str(tmp_path / "mask"),
                 "--out", str(tmp_path / "rep2")]) == 0
    u2 = json.load(open(tmp_path / "rep2" / "metrics.json"))["uncertainty"]
    assert u2["spearman_pooled"] > 0.3 and u2["spearman_pooled"] != u["spearman_pooled"]
    io.write(tmp_path / "std" / "i0.tif", np.zeros((1, 12, 12), np.float32))
    assert main(["evaluate", "--task", "paired", "--real", str(tmp_path / "gt"), "--fake", str(tmp_path / "mean"),
                 "--uncertainty", str(tmp_path / "std"), "--out", str(tmp_path / "rep")]) == 2


def test_nifti_volume_pairs_give_paired_slices(volume_folder, tmp_path):
    for f in sorted(volume_folder.glob("*.nii.gz"))[:2]:
        x, meta = io.read(f)
        io.write(tmp_path / "source" / f.name, x, meta)
        io.write(tmp_path / "target" / f.name, (255 - x).astype(np.uint8), meta)
    cfg = config.load("translate", [f"data.path={tmp_path}", "data.kind=slices", "data.axis=2"])
    ds = ImageDataset(cfg.data)
    assert len(ds) == 32 and ds.num_source_channels == 1
    it = ds[(5, 0)]
    src = ds.source_normalizer.denormalize(it["cond_image"], "float32")
    tgt = ds.normalizer.denormalize(it["x"], "float32")
    assert np.allclose(src + tgt, 255, atol=1.0)                   # the same slice of both volumes
    assert ds.meta["affine"] is not None
