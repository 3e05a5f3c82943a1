"""Fault campaign: SIGKILL training and sample generation at random moments, resume, and check what is left.

  python bench/faults.py [--trials 20] [--workdir DIR] [--seed 0] [--json OUT.json]

training: ``neurodiff train tiny`` (8 MNI152 slices, 32x32, 480 images, a checkpoint every 48) is started and
killed after a random delay (0.5 s to 8 s: during start-up, training steps and checkpoint writes), then resumed
with ``--resume``, again and again until a run finishes. After every kill: every checkpoint on disk loads (no
partial file), and the images lost (last logged minus newest checkpoint) are at most one checkpoint interval. At
the end the weights equal, bit for bit, those of an uninterrupted run.
generation: ``neurodiff sample`` of 24 samples is killed the same way and rerun into the same folder. After every
kill: every sample file reads whole; at the end the set is complete (no duplicates, no missing index, no stray
temporary file), the manifest lists exactly the files, and every file is byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = ["--set", "train.total_nimg=480", "--set", "train.batch=8", "--set", "train.checkpoint_every_nimg=48",
         "--set", "train.log_every_nimg=8", "--set", "train.preview_every_nimg=100000", "--set", "train.keep_checkpoints=3"]
N_SAMPLES = 24


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "neurodiff.cli", *args]


def _run_killed(cmd: list[str], delay: float) -> bool:
    """Run ``cmd``; SIGKILL it after ``delay`` seconds. True if it finished by itself first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return False
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[3:5])} failed: {proc.stderr.read().decode()[-500:]}")
    return True


def make_data(root: Path) -> Path:
    import numpy as np

    from neurodiff.data import io
    from neurodiff.demo import mni_template_path

    mni = io.read(mni_template_path())[0][0]
    for z in range(50, 130, 10):
        io.write(root / "data" / f"slice_{z:03d}.png", np.ascontiguousarray(mni[18:178:5, 20:212:6, z][:32, :32])[None])
    return root / "data"


def _logged_nimg(run: Path) -> int:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    return max([json.loads(x)["nimg"] for x in lines if x.strip().startswith("{") and '"loss"' in x] or [0])


def train_campaign(root: Path, trials: int, rng: random.Random) -> dict:
    import torch

    from neurodiff.train.state import latest_checkpoint, list_checkpoints, load_checkpoint

    data = make_data(root)
    ref = root / "ref"
    t0 = time.time()
    subprocess.run(_cli("train", "tiny", "--data", str(data), "--out", str(ref), "--no-progress", *TRAIN), check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    span = time.time() - t0                 # kills fall anywhere in a run: start-up, steps, checkpoint writes
    a = latest_checkpoint(ref)
    run = root / "run"
    kills, lost, runs, completed, same = 0, [], 0, 0, True
    while True:
        resume = ["--resume"] if list_checkpoints(run) else []
        if resume == [] and run.exists():       # killed before the first checkpoint: start again from nothing
            shutil.rmtree(run)
        delay = rng.uniform(0.3, span) if kills < trials else 1e9
        finished = _run_killed(_cli("train", "tiny", "--data", str(data), "--out", str(run), "--no-progress",
                                    *resume, *TRAIN), delay)
        runs += 1
        if finished:                            # a completed run must equal the uninterrupted one, bit for bit
            b = latest_checkpoint(run)
            same &= a["nimg"] == b["nimg"] and all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
            completed += 1
            if kills >= trials:
                break
            shutil.rmtree(run)                  # and again, until enough kills were survived
            continue
        kills += 1
        for p in list_checkpoints(run):       # every checkpoint on disk is whole
            load_checkpoint(p)
        newest = latest_checkpoint(run)
        lost.append(_logged_nimg(run) - (newest["nimg"] if newest else 0))
    stray = [p.name for p in (run / "checkpoints").iterdir() if ".tmp" in p.name]
    res = {"kills": kills, "runs": runs, "completed_runs": completed, "max_images_lost": max(lost or [0]),
           "interval": 48, "final_equal_to_uninterrupted": bool(same), "stray_temp_files": stray}
    assert res["max_images_lost"] <= 48, res
    assert same, res
    return res


def sample_campaign(root: Path, trials: int, rng: random.Random) -> dict:
    from neurodiff.data import io

    run = root / "ref"            # the model trained by the training campaign's reference run
    if not run.is_dir():
        data = make_data(root)
        subprocess.run(_cli("train", "tiny", "--data", str(data), "--out", str(run), "--no-progress", *TRAIN),
                       check=True, stdout=subprocess.DEVNULL)
    args = ["--n", str(N_SAMPLES), "--steps", "8", "--batch", "4", "--no-progress"]
    t0 = time.time()
    subprocess.run(_cli("sample", str(run), "--out", str(root / "s_ref"), *args), check=True, stdout=subprocess.DEVNULL)
    span = time.time() - t0
    out = root / "s"
    kills, sets = 0, 0
    while True:
        delay = rng.uniform(0.3, span) if kills < trials else 1e9
        if _run_killed(_cli("sample", str(run), "--out", str(out), *args), delay):
            sets += 1
            if kills >= trials:
                break
            _check_set(out, root / "s_ref")
            shutil.rmtree(out)                  # a new set, killed again
            continue
        kills += 1
        for f in out.glob("sample_*.png"):      # whatever is there reads whole
            io.read(f)
    res = {"kills": kills, "completed_sets": sets, **_check_set(out, root / "s_ref")}
    return res


def _check_set(out: Path, ref: Path) -> dict:
    import numpy as np

    from neurodiff.data import io

    files = sorted(f.name for f in out.glob("sample_*"))
    want = [f"sample_{k:06d}.png" for k in range(N_SAMPLES)]
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    identical = all(np.array_equal(io.read(out / f)[0], io.read(ref / f)[0]) for f in want)
    stray = [f.name for f in out.iterdir() if ".tmp" in f.name]
    res = {"files": len(files), "complete": files == want,
           "manifest_matches": [r["file"] for r in rows] == want, "identical_to_uninterrupted": identical,
           "stray_temp_files": stray}
    assert res["complete"] and res["manifest_matches"] and identical and not stray, res
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=20, help="kills per campaign (at least 20 for the README figure)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    root = a.workdir or Path(tempfile.mkdtemp(prefix="neurodiff-faults-"))
    rng = random.Random(a.seed)
    t0 = time.time()
    res = {"training": train_campaign(root, a.trials, rng), "generation": sample_campaign(root, a.trials, rng)}
    res["seconds"] = round(time.time() - t0)
    print(json.dumps(res, indent=2))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
