"""torchrun with 2 CPU processes (gloo): training matches one process with the same global batch, and
sharded sampling writes the same files as one process."""

import csv
import json
import os
import subprocess
import sys

import pytest

from neurodiff.train.state import latest_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
COMMON = ["train", "tiny", "--no-progress", "--set", "train.total_nimg=48", "--set", "train.batch=8",
          "--set", "data.labels=folders", "--set", "data.hflip=true"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "neurodiff.cli", *args], capture_output=True, text=True, env=ENV)


def torchrun(port: int, *args):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), "-m", "neurodiff.cli", *args],
                          capture_output=True, text=True, env=ENV)


@pytest.fixture(scope="module")
def one_process_run(slice_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "one"
    r = cli(*COMMON, "--data", str(slice_folder), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_two_processes_train_like_one(slice_folder, one_process_run, tmp_path):
    two = torchrun(29531, *COMMON, "--data", str(slice_folder), "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = latest_checkpoint(one_process_run), latest_checkpoint(tmp_path / "two")
    assert a["nimg"] == b["nimg"] == 48
    diff = max((a["net"][k] - b["net"][k]).abs().max().item() for k in a["net"])
    assert diff < 1e-5   # equal up to the order of float reductions
    moved = max((a["net"][k] - a["ema"][k]).abs().max().item() for k in a["net"])
    assert moved > 1e-6   # the EMA lags the weights only if training changed them
    logs = [json.loads(line) for line in open(tmp_path / "two" / "metrics.jsonl")]
    assert logs[-1]["nimg"] == 48


def test_sharded_sampling_writes_the_same_files_as_one_process(one_process_run, tmp_path):
    args = [str(one_process_run), "--num-samples", "7", "--steps", "4", "--label", "1", "--no-progress"]
    one = cli("sample", *args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = torchrun(29532, "sample", *args, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-2000:]
    files_one = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    files_two = sorted(p.name for p in (tmp_path / "two").glob("*.png"))
    assert len(files_one) == 7 and files_one == files_two
    for name in files_one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    rows = lambda d: sorted(tuple(r.items()) for r in csv.DictReader(open(d / "manifest.csv")))  # noqa: E731
    assert rows(tmp_path / "one") == rows(tmp_path / "two")
    assert len(rows(tmp_path / "two")) == 7


def test_latent_model_samples_with_covariates_sharded_like_one_process(tmp_path, mni):
    """seed 001's export under torchrun: a latent model with a covariate table, two ranks, the same files."""
    from test_latent import AE_TINY, LDM_TINY, _covariate_folder

    from neurodiff.cli import main

    data = tmp_path / "data"
    cov = _covariate_folder(data, mni)
    assert main(["train-ae", "ae-2d", "--data", str(data), "--out", str(tmp_path / "ae"), "--no-progress",
                 "--set", "data.crop=[]"] + AE_TINY) == 0
    ldm = tmp_path / "ldm"
    assert main(["train", "ldm-2d", "--data", str(data), "--codec", str(tmp_path / "ae"), "--covariates", str(cov),
                 "--out", str(ldm), "--no-progress"] + LDM_TINY) == 0
    table = tmp_path / "table.csv"
    table.write_text("brightness\n0.55\n0.7\n0.8\n0.95\n1.0\n")
    args = [str(ldm), "--num-samples", "5", "--covariates", str(table), "--steps", "3", "--no-progress"]
    one = cli("sample", *args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = torchrun(29533, "sample", *args, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert len(names) == 5 and names == sorted(p.name for p in (tmp_path / "two").glob("*.png"))
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    rows = lambda d: sorted(tuple(r.items()) for r in csv.DictReader(open(d / "manifest.csv")))  # noqa: E731
    assert rows(tmp_path / "one") == rows(tmp_path / "two")
    assert [r["covariates"] for r in csv.DictReader(open(tmp_path / "two" / "manifest.csv"))] == \
        [f"brightness={v}" for v in ("0.55", "0.7", "0.8", "0.95", "1")]
