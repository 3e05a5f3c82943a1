"""A few trials of the fault campaign (bench/faults.py runs >= 20): training and generation killed with SIGKILL
at random moments resume without a partial checkpoint, losing at most one checkpoint interval, and end equal to
uninterrupted runs; a killed sample set completes without duplicates, truncated files or a wrong manifest."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

spec = importlib.util.spec_from_file_location("faults", Path(__file__).resolve().parents[1] / "bench" / "faults.py")
faults = importlib.util.module_from_spec(spec)
spec.loader.exec_module(faults)


def test_killed_training_and_generation_resume_to_the_uninterrupted_result(tmp_path):
    rng = random.Random(1)
    t = faults.train_campaign(tmp_path, 2, rng)
    assert t["kills"] == 2 and t["final_equal_to_uninterrupted"] and t["max_images_lost"] <= t["interval"]
    s = faults.sample_campaign(tmp_path, 2, rng)
    assert s["kills"] == 2 and s["complete"] and s["manifest_matches"] and s["identical_to_uninterrupted"]
