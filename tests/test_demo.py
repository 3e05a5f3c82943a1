"""The demo on real data: shipped weights produce depth-appropriate slices; the demo writes what it promises."""

import numpy as np
import pytest
import torch

from neurodiff import config
from neurodiff.data import io
from neurodiff.data.datasets import ImageDataset
from neurodiff.demo import WEIGHTS, depth_check, mni_template_path, run_demo
from neurodiff.tasks.generate import sample_batch, sample_seed
from neurodiff.train.state import load_model


@pytest.fixture(scope="module")
def real_slices():
    cfg = config.load("demo", [f"data.path={mni_template_path()}"]).data
    ds = ImageDataset(cfg)
    x = torch.stack([ds[i]["x"] for i in range(len(ds))])
    y = torch.stack([ds[i]["label"] for i in range(len(ds))])
    return x, y


def test_shipped_weights_generate_slices_of_the_requested_depth(real_slices):
    model = load_model(WEIGHTS)
    assert model.cfg.model.num_classes == 14
    labels = [b for b in range(14) for _ in range(2)]
    x = sample_batch(model.net, model.cfg, [sample_seed(1, k) for k in range(len(labels))], labels,
                     guidance=2.0, steps=20, sampler="dpmpp_2m", exact=False)
    check = depth_check(*real_slices, x, torch.tensor(labels), 14)
    assert check["within_one"] >= 0.8, check
    # not noise: the brain occupies a plausible, depth-dependent part of the field of view
    fg = (x > -0.8).float().mean((1, 2, 3))
    real_x, real_y = real_slices
    real_fg = torch.stack([(real_x[real_y == b] > -0.8).float().mean() for b in range(14)])
    assert torch.corrcoef(torch.stack([fg.reshape(14, 2).mean(1), real_fg]))[0, 1] > 0.8


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = run_demo(tmp_path / "demo", minutes=0.1, progress=False, per_depth=1)
    printed = capsys.readouterr().out
    assert "depth check" in printed and str(out["grid"]) in printed
    stack, meta = io.read(out["stack"])
    assert stack.shape[:2] == (1, 14) and meta.dtype == "uint8"
    assert meta.spacing is not None and meta.unit == "mm"
    g, _ = io.read(out["grid"])
    assert g.shape[0] == 1 and g.shape[2] > g.shape[1]
    assert np.std(stack) > 10   # not a blank stack
    assert (out["run_dir"] / "config.yaml").is_file()
    # the demo's per-slice output is ready for `neurodiff evaluate`
    from neurodiff.cli import main
    assert main(["evaluate", "--real", str(out["grid"].parent / "real"), "--fake", str(out["grid"].parent / "samples"),
                 "--out", str(tmp_path / "report"), "--repeats", "1"]) == 0
    assert (tmp_path / "report" / "metrics.json").is_file() and (tmp_path / "report" / "report.html").is_file()
