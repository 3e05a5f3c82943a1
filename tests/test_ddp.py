"""torchrun with 2 CPU processes (gloo): training matches one process with the same global batch."""

import json
import os
import subprocess
import sys


from neurodiff.train.state import latest_checkpoint


def test_two_processes_train_like_one(slice_folder, tmp_path):
    common = ["train", "tiny", "--data", str(slice_folder), "--no-progress", "--set", "train.total_nimg=48",
              "--set", "train.batch=8", "--set", "data.labels=folders", "--set", "data.hflip=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "neurodiff.cli", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29531", "-m", "neurodiff.cli", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = latest_checkpoint(tmp_path / "one"), latest_checkpoint(tmp_path / "two")
    assert a["nimg"] == b["nimg"] == 48
    diff = max((a["net"][k] - b["net"][k]).abs().max().item() for k in a["net"])
    assert diff < 1e-5   # equal up to the order of float reductions
    assert a["net"]["out.2.weight"].abs().max() > 1e-4   # zero-initialised output layer: training moved it
    logs = [json.loads(line) for line in open(tmp_path / "two" / "metrics.jsonl")]
    assert logs[-1]["nimg"] == 48
