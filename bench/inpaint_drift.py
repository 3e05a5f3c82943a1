"""Does RePaint's resampling drift a model's samples? With the whole image masked RePaint samples the prior:
compare those samples with the model's own sampler's and with random crops of the training images.

    python bench/inpaint_drift.py OUT [--run RUN] [--size 128] [--n 8] [--steps 50] [--schedules J,R,U,ETA,ORDER ...]

OUT: a folder made by bench/inpaint_ihc.sh or inpaint_he.sh (run/, train/). For the model's own sampler
(sample.sampler) and for RePaint schedules (jump / resample / jump_until / eta / order: 2 = DPM-Solver++(2M) steps
down, see tasks.inpaint.repaint) prints and writes OUT/drift.json:
mean intensity (0-255 data units), nuclei per 10^4 px, mean nucleus area (px), and the network calls per sample. An exact denoiser would
give the same statistics for every schedule; a fill that grows darker and loses nuclei with every jump is the
model's error accumulating.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from inpaint_bias import images, nuclei_stats, random_crops
from neurodiff.data.normalize import Normalizer
from neurodiff.diffusion.denoiser import make_precond
from neurodiff.diffusion.schedules import sampling_sigmas
from neurodiff.tasks.generate import build_denoiser, make_cond, sample_batch
from neurodiff.tasks.inpaint import jump_schedule, network_calls, repaint
from neurodiff.train.state import load_model

# (jump, resample, jump_until, eta, order)
SCHEDULES = [(1, 1, 1.0, 1.0, 1), (5, 5, 1.0, 1.0, 1), (5, 5, 1.0, 0.0, 1), (5, 5, 0.5, 1.0, 1), (5, 5, 0.5, 0.0, 1),
             (1, 1, 1.0, 0.0, 1), (1, 1, 1.0, 0.0, 2), (5, 5, 0.5, 0.0, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--run", type=Path, default=None, help="the model (default: OUT/run)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--schedules", nargs="*", default=None, metavar="J,R,U,ETA,ORDER",
                    help="RePaint rows to run (default: all of SCHEDULES); no model-sampler row when given")
    args = ap.parse_args()
    model = load_model(args.run or args.out / "run")
    cfg, d, n, size = model.cfg, model.cfg.diffusion, args.n, args.size
    norm = Normalizer(**cfg.data.meta["normalizer"])
    real = random_crops(images(args.out / "train"), size, n, np.random.default_rng(0))

    def row(name, imgs, calls, t0):
        s = nuclei_stats(imgs)
        r = {"name": name, "network_calls": calls, "mean_intensity": float(np.mean([a.mean() for a in imgs])),
             "nuclei_per_1e4_px": s["nuclei_per_1e4_px"], "mean_area_px": s["mean_area_px"],
             "seconds": time.perf_counter() - t0}
        print(f"{name:42s} {calls:4d} calls  mean {r['mean_intensity']:5.1f}  nuclei/10^4 px "
              f"{r['nuclei_per_1e4_px']:5.1f}  area {r['mean_area_px']:4.0f} px  {r['seconds']:.0f} s", flush=True)
        return r

    rows = [row("training crops", real, 0, time.perf_counter())]
    schedules = SCHEDULES
    if args.schedules is not None:
        schedules = [(int(j), int(r), float(u), float(e), int(o))
                     for j, r, u, e, o in (v.split(",") for v in args.schedules)]
    else:
        t0 = time.perf_counter()
        sampler = cfg.sample.sampler
        with torch.no_grad():
            x = sample_batch(model.net, cfg, list(range(n)), steps=args.steps, sampler=sampler,
                             shape=[1, size, size], precision="fp32")
        gen = [norm.denormalize(a, "float32")[0] for a in x]
        rows.append(row(f"{sampler} (the model's sampler), {args.steps} steps", gen,
                        2 * args.steps - 1 if sampler == "heun" else args.steps, t0))
    precond = make_precond(d)
    sigmas = sampling_sigmas(precond, args.steps, d.sigma_min, d.sigma_max, d.rho).double()
    D = build_denoiser(model.net, precond, make_cond(cfg, [None] * n, None, "cpu"), n, 1.0, True, [1, size, size])
    known = torch.zeros(n, 1, size, size, dtype=torch.float64)
    for jump, resample, until, eta, order in schedules:
        t0 = time.perf_counter()
        sched = jump_schedule(args.steps, jump, resample, until)
        with torch.no_grad():
            y = repaint(lambda a, s: D(a.float(), s).double(), known, torch.ones_like(known, dtype=torch.bool),
                        sigmas, sched, [torch.Generator().manual_seed(k) for k in range(n)], eta=eta,
                        order=order)
        rows.append(row(f"RePaint {args.steps}/{jump}/{resample}, jump-until {until}, eta {eta}"
                        + (f", order {order}" if order > 1 else ""),
                        [norm.denormalize(a, "float32")[0] for a in y], network_calls(sched), t0))
    tmp = args.out / ".drift.json.tmp"
    tmp.write_text(json.dumps({"size": size, "n": n, "steps": args.steps, "rows": rows}, indent=2))
    tmp.replace(args.out / "drift.json")


if __name__ == "__main__":
    main()
