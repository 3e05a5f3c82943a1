"""Training: overfitting, exact resume, checkpoints, export; sampling determinism."""

import json

import pytest
import torch

from neurodiff import config
from neurodiff.tasks.generate import generate
from neurodiff.train.loop import train
from neurodiff.train.state import export_model, latest_checkpoint, list_checkpoints, load_model

QUIET = ["train.preview_every_nimg=100000", "train.checkpoint_every_nimg=100000"]


def interval_losses(run_dir):
    return [json.loads(line)["loss"] for line in open(run_dir / "metrics.jsonl")]


def test_tiny_2d_overfits_8_images(slice_folder, tmp_path):
    # low noise levels: the loss there can only fall this far by learning the 8 images themselves
    cfg = config.load("tiny", [f"data.path={slice_folder}", "train.total_nimg=3200", "train.log_every_nimg=160",
                               "diffusion.P_mean=-2.0", "diffusion.P_std=0.5"] + QUIET)
    train(cfg, tmp_path / "run", progress=False)
    losses = interval_losses(tmp_path / "run")
    assert losses[0] / losses[-1] >= 5.0, losses


def test_tiny_3d_overfits_8_volumes(volume_folder, tmp_path):
    cfg = config.load("tiny3d", [f"data.path={volume_folder}", "data.size=[]", "data.crop=[]", "model.channels=16",
                                 "train.lr=3e-3", "train.warmup_nimg=200", "train.total_nimg=3200",
                                 "train.log_every_nimg=160", "diffusion.P_mean=-2.0", "diffusion.P_std=0.5"] + QUIET)
    train(cfg, tmp_path / "run", progress=False)
    losses = interval_losses(tmp_path / "run")
    assert losses[0] / losses[-1] >= 5.0, losses


def _weights(run_dir):
    state = latest_checkpoint(run_dir)
    return state["nimg"], {**{f"net.{k}": v for k, v in state["net"].items()},
                           **{f"ema.{k}": v for k, v in state["ema"].items()}}


def test_resume_continues_exactly(slice_folder, tmp_path):
    base = [f"data.path={slice_folder}", "train.log_every_nimg=16", "model.dropout=0.1", "data.hflip=true",
            "data.labels=folders"] + QUIET
    train(config.load("tiny", base + ["train.total_nimg=96"]), tmp_path / "straight", progress=False)
    train(config.load("tiny", base + ["train.total_nimg=48"]), tmp_path / "split", progress=False)
    with pytest.raises(Exception, match="--resume"):
        train(config.load("tiny", base + ["train.total_nimg=96"]), tmp_path / "split", progress=False)
    resumed = config.load(tmp_path / "split" / "config.yaml", ["train.total_nimg=96"])
    train(resumed, tmp_path / "split", resume=True, progress=False)
    n1, w1 = _weights(tmp_path / "straight")
    n2, w2 = _weights(tmp_path / "split")
    assert n1 == n2 == 96 and w1.keys() == w2.keys()
    assert max((w1[k].float() - w2[k].float()).abs().max().item() for k in w1) < 1e-6
    assert len(list_checkpoints(tmp_path / "split")) <= 2  # keep_checkpoints


@pytest.fixture(scope="module")
def tiny_run(slice_folder, tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny") / "run"
    cfg = config.load("tiny", [f"data.path={slice_folder}", "train.total_nimg=64", "data.labels=folders",
                               "train.checkpoint_every_nimg=32", "train.preview_every_nimg=32"])
    train(cfg, run, progress=False)
    return run


def test_run_folder_holds_what_a_user_expects(tiny_run):
    assert (tiny_run / "config.yaml").is_file()
    assert [p.name for p in list_checkpoints(tiny_run)] == ["ckpt-000000000032.pt", "ckpt-000000000064.pt"]
    assert len(list((tiny_run / "previews").glob("preview_*.png"))) == 2
    rec = [json.loads(line) for line in open(tiny_run / "metrics.jsonl")]
    assert rec[-1]["nimg"] == 64 and {"loss", "lr", "img_per_s"} <= set(rec[-1])
    state = latest_checkpoint(tiny_run)
    assert json.loads(state["config"])["data"]["meta"]["class_names"] == ["high", "low"]


def test_sample_k_is_the_same_for_any_batch(tiny_run, tmp_path):
    model = load_model(tiny_run)
    kw = dict(n=5, seed=0, label="all", guidance=2.0, steps=4, sampler="ancestral", progress=False)
    generate(model.net, model.cfg, tmp_path / "b1", batch=1, **kw)
    generate(model.net, model.cfg, tmp_path / "b4", batch=4, **kw)
    for k in range(5):
        a = (tmp_path / "b1" / f"sample_{k:06d}.png").read_bytes()
        assert a == (tmp_path / "b4" / f"sample_{k:06d}.png").read_bytes()
    other = generate(model.net, model.cfg, tmp_path / "s1", batch=2, **{**kw, "seed": 1})
    assert len(other) == 5
    assert (tmp_path / "s1" / "sample_000000.png").read_bytes() != (tmp_path / "b1" / "sample_000000.png").read_bytes()


def test_export_gives_the_same_model_and_samples(tiny_run, tmp_path):
    export_model(tiny_run, tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"model.safetensors", "config.json"}
    a, b = load_model(tiny_run), load_model(tmp_path / "model")
    assert a.digest == b.digest
    x = torch.randn(2, 1, 32, 32)
    from neurodiff.nn.unet import Cond
    lab = Cond(label=torch.tensor([0, 1]))
    assert torch.equal(a.net(x, torch.zeros(2), lab), b.net(x, torch.zeros(2), lab))


def test_samples_keep_the_data_format_and_manifest(tiny_run, tmp_path):
    import csv

    from neurodiff.data import io

    model = load_model(tiny_run)
    generate(model.net, model.cfg, tmp_path / "s", n=3, label="low", steps=3, digest=model.digest, progress=False)
    x, meta = io.read(tmp_path / "s" / "sample_000002.png")
    assert meta.dtype == "uint8" and x.shape == (1, 32, 32)
    rows = list(csv.DictReader(open(tmp_path / "s" / "manifest.csv")))
    assert [r["file"] for r in rows] == [f"sample_{k:06d}.png" for k in range(3)]
    assert rows[0]["label"] == "1" and rows[0]["label_name"] == "low" and rows[0]["model_digest"] == model.digest


def test_nan_loss_stops_and_keeps_the_last_checkpoint(slice_folder, tmp_path, monkeypatch):
    from neurodiff.errors import NeurodiffError
    from neurodiff.train import loop

    cfg = config.load("tiny", [f"data.path={slice_folder}", "train.total_nimg=32",
                               "train.checkpoint_every_nimg=16"] + QUIET[:1])
    train(cfg, tmp_path / "run", progress=False)
    before = latest_checkpoint(tmp_path / "run")
    real = loop.denoising_loss
    monkeypatch.setattr(loop, "denoising_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    cfg2 = config.load(tmp_path / "run" / "config.yaml", ["train.total_nimg=64"])
    with pytest.raises(NeurodiffError, match="nan"):
        train(cfg2, tmp_path / "run", resume=True, progress=False)
    after = latest_checkpoint(tmp_path / "run")
    assert after["nimg"] == before["nimg"] == 32
    assert all(torch.equal(after["net"][k], before["net"][k]) for k in before["net"])


def test_pickle_payload_in_a_checkpoint_is_refused_unexecuted(tmp_path):
    import os
    import pickle

    from neurodiff.errors import NeurodiffError
    from neurodiff.train.state import load_checkpoint

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "ckpt-000000000001.pt"
    with open(path, "wb") as f:
        pickle.dump({"net": Payload(), "ema": {}, "nimg": 1, "config": "{}"}, f)
    torch.save({"net": Payload(), "ema": {}, "nimg": 1, "config": "{}"}, tmp_path / "b.pt")
    for p in (path, tmp_path / "b.pt"):
        with pytest.raises(NeurodiffError, match="refused|not a readable"):
            load_checkpoint(p)
    assert not marker.exists()


def test_bf16_on_a_cpu_without_native_bf16_warns(slice_folder, tmp_path, monkeypatch, capsys):
    import neurodiff.precision as precision
    import neurodiff.train.loop as loop
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(precision, "_warned", set())     # the warning comes once per process
    used, real_autocast = [], loop.autocast
    monkeypatch.setattr(loop, "autocast", lambda p, d: used.append(p) or real_autocast(p, d))
    cfg = config.load("tiny", [f"data.path={slice_folder}", "train.total_nimg=8", "train.precision=bf16"])
    train(cfg, tmp_path / "run", progress=False)
    assert "train.precision=bf16 but this CPU" in capsys.readouterr().out and used == ["fp32"]
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    train(config.load("tiny", [f"data.path={slice_folder}", "train.total_nimg=8", "train.precision=bf16"]),
          tmp_path / "run2", progress=False)
    assert "no native bf16" not in capsys.readouterr().out and used[-1] == "bf16"
