"""Super-resolution stages, tiles and the cascade command."""

import csv

import numpy as np
import pytest
import torch

from neurodiff import config
from neurodiff.cli import main
from neurodiff.data import io
from neurodiff.data.datasets import ImageDataset
from neurodiff.tasks.superres import downsample, lowres_input, upsample
from neurodiff.tiling import regions, tiled, window


@pytest.mark.parametrize("spatial", [[37, 50], [20, 33, 18]])
def test_tiles_cover_everything_and_stitching_is_the_identity(spatial):
    cover = torch.zeros(spatial)
    for r in regions(spatial, 16, 4):
        cover[r] += 1
        assert all(s.stop - s.start == min(16, n) for s, n in zip(r, spatial))
    assert (cover >= 1).all()
    assert (window([16] * len(spatial), 4) > 0).all()
    x = torch.randn(2, 1, *spatial)
    D = tiled(lambda xt, sigma, region: 0.5 * xt + sigma.view(-1, *[1] * (xt.ndim - 1)), 16, 4)
    sigma = torch.tensor([0.3, 2.0])
    assert torch.allclose(D(x, sigma), 0.5 * x + sigma.view(-1, *[1] * len(spatial) + [1])[:, :1], atol=1e-6)


def test_lowres_input_degrades_upsamples_and_noises():
    x = torch.rand(1, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(0)
    clean, level = lowres_input(x, 2, 0.0, g)
    assert level == 0.0
    assert torch.allclose(clean, upsample(downsample(x[None], 2), [16, 16])[0])
    assert torch.allclose(downsample(x[None], 2)[0, 0, 0, 0], x[0, :2, :2].mean())
    levels = [lowres_input(x, 2, 0.5, g)[1] for _ in range(200)]
    assert 0 <= min(levels) and max(levels) <= 0.5 and 0.2 < np.mean(levels) < 0.3
    noisy, level = lowres_input(x, 2, 0.5, torch.Generator().manual_seed(3))
    assert abs((noisy - clean).std().item() - level) < 0.1 * level + 0.02


SR_SET = ["data.size=[32,32]", "data.crop=[16,16]", "data.sr_factor=2", "train.total_nimg=32", "train.batch=8",
          "train.checkpoint_every_nimg=32", "train.preview_every_nimg=32", "sample.steps=3"]


def test_sr_items_carry_the_lowres_input_and_its_noise_level(slice_folder):
    cfg = config.load("sr-x2", SR_SET)
    cfg.data.path = str(slice_folder)
    item = ImageDataset(cfg.data)[(0, 5)]
    assert item["x"].shape == item["cond_image"].shape == (1, 16, 16)
    assert item["scalars"].shape == (1,) and 0 <= float(item["scalars"][0]) <= 0.2


@pytest.fixture(scope="module")
def sr_run(slice_folder, tmp_path_factory):
    run = tmp_path_factory.mktemp("sr") / "stage"
    args = ["train", "sr-x2", "--data", str(slice_folder), "--out", str(run), "--no-progress"]
    for s in SR_SET + ["model.channels=8", "model.channel_mult=[1,2]", "model.num_res_blocks=1",
                       "model.attn_levels=[1]"]:
        args += ["--set", s]
    assert main(args) == 0
    assert (run / "previews").is_dir()
    return run


def test_cascade_from_real_lowres_images_in_tiles(sr_run, tmp_path, capsys):
    low = tmp_path / "low"
    for i in range(3):
        io.write(low / f"img_{i}.png", (np.random.default_rng(i).random((1, 16, 16)) * 255).astype(np.uint8))
    out = tmp_path / "hi"
    assert main(["cascade", f"stages={sr_run},{sr_run}", "--lowres", str(low), "--out", str(out), "--keep",
                 "--no-progress"]) == 0
    assert "64x64" in capsys.readouterr().out            # 16 -> 32 -> 64, tiles of 16 at both stages
    final = sorted(p.name for p in out.glob("img_*.png"))   # named after their inputs: evaluate pairs by name
    assert final == ["img_0.png", "img_1.png", "img_2.png"]
    assert io.read(out / final[0])[0].shape == (1, 64, 64)
    assert io.read(out / "stage_1" / final[0])[0].shape == (1, 32, 32)
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [r["label_name"] for r in rows] == ["img_0.png", "img_1.png", "img_2.png"]
    again = tmp_path / "again"
    assert main(["cascade", f"stages={sr_run},{sr_run}", "--lowres", str(low), "--out", str(again)]) == 0
    assert np.array_equal(io.read(out / final[2])[0], io.read(again / final[2])[0])   # seeded


def test_cascade_runs_its_models_on_the_device_dist_init_gives(sr_run, slice_folder, tmp_path, model_loads):
    base = tmp_path / "base"
    assert main(["train", "tiny", "--data", str(slice_folder), "--out", str(base), "--no-progress",
                 "--set", "data.size=[16,16]", "--set", "train.total_nimg=8", "--set", "train.batch=8"]) == 0
    assert main(["cascade", f"base={base}", f"stages={sr_run}", "--n", "1", "--steps", "2",
                 "--out", str(tmp_path / "hi")]) == 0
    assert model_loads == [torch.device("cpu", 0)] * 2      # the stage and the base
    assert io.read(tmp_path / "hi" / "sample_000000.png")[0].shape == (1, 32, 32)


def test_cascade_from_a_base_model_and_bad_requests(sr_run, slice_folder, tmp_path, capsys):
    base = tmp_path / "base"
    assert main(["train", "tiny", "--data", str(slice_folder), "--out", str(base), "--no-progress",
                 "--set", "data.size=[16,16]", "--set", "train.total_nimg=8", "--set", "train.batch=8"]) == 0
    out = tmp_path / "hi"
    assert main(["cascade", f"base={base}", f"stages={sr_run}", "--n", "2", "--steps", "2", "--out", str(out)]) == 0
    assert io.read(out / "sample_000001.png")[0].shape == (1, 32, 32)
    assert main(["cascade", f"base={base}", "--out", str(out)]) == 2
    assert main(["cascade", f"stages={sr_run}", "--out", str(out)]) == 2
    assert main(["cascade", f"stages={base}", "--lowres", str(slice_folder), "--out", str(out)]) == 2
    assert "sr_factor" in capsys.readouterr().err


def test_3d_stage_trains_and_super_resolves_a_volume_in_tiles(volume_folder, tmp_path):
    run = tmp_path / "sr3d"
    args = ["train", "sr-x2-3d", "--data", str(volume_folder), "--out", str(run), "--no-progress"]
    for s in ["data.size=[16,16,16]", "data.crop=[8,8,8]", "train.total_nimg=4", "train.batch=2",
              "train.checkpoint_every_nimg=4", "train.preview_every_nimg=4", "sample.steps=2", "model.channels=8",
              "model.channel_mult=[1,2]", "model.num_res_blocks=1", "train.precision=fp32"]:
        args += ["--set", s]
    assert main(args) == 0
    vol = io.read(next(volume_folder.glob("*.nii.gz")))[0][:, :12, :12, :12]
    outs = []
    for name, v in (("a", vol), ("b", vol[:, ::-1])):     # index 0, the same seed, in both runs
        io.write(tmp_path / name / "v.nii.gz", np.ascontiguousarray(v))
        assert main(["cascade", f"stages={run}", "--lowres", str(tmp_path / name), "--out", str(tmp_path / f"hi_{name}"),
                     "--no-progress"]) == 0
        outs.append(io.read(tmp_path / f"hi_{name}" / "v.nii.gz"))
    (a, meta), (b, _) = outs
    assert a.shape == (1, 24, 24, 24) and meta.format == "nifti"      # 3 x 3 x 3 overlapping tiles of 8^3
    assert not np.array_equal(a, b)                                   # the low-res input steers the output


def test_cascade_warns_when_stages_were_trained_in_other_units(sr_run, capsys):
    from neurodiff.tasks.superres import _check_units
    from neurodiff.train.state import load_model

    stage = load_model(sr_run)
    _check_units(stage.cfg, stage)
    assert "warning" not in capsys.readouterr().out
    other = load_model(sr_run).cfg
    other.data.meta["normalizer"] = {"kind": "minmax", "lo": 0.0, "hi": 65535.0}
    _check_units(other, stage)
    assert "same units" in capsys.readouterr().out
