"""Where do the inpainting bench's nuclei-size errors come from: the model, or the fill at the mask's edge?

    python bench/inpaint_bias.py OUT [--run RUN] [--n 16] [--steps 30]

OUT: a folder made by bench/inpaint_ihc.sh or inpaint_he.sh (run/, train/, intact/, eval_*/). Two checks, written to
OUT/bias.json and printed:
1. The model alone: ``--n`` unconditional samples at the training size (64^2) and at the evaluation size (128^2)
   against as many random crops of the training image(s): nuclei per 10^4 px and mean nucleus area (px).
2. The fills: for every eval_*/ folder, the nuclei whose centre lies in a mask, pooled over its repaints, in the
   intact and in the repaired images: count, mean and median area, how many are small (< 50 px), and how many
   straddle the mask's edge (part of their pixels known).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from neurodiff.data import io
from neurodiff.data.normalize import Normalizer
from neurodiff.metrics.cells import segment_nuclei
from neurodiff.tasks.generate import sample_batch
from neurodiff.train.state import load_model

SMALL_PX = 50


def nuclei_stats(images: list[np.ndarray]) -> dict:
    """Mean nuclei per 10^4 px and mean area over 2D images [H, W]."""
    areas, per_1e4 = [], []
    for x in images:
        a = np.bincount(segment_nuclei(x[None]).ravel())[1:]
        areas += list(a[a > 0])
        per_1e4.append((a > 0).sum() / x.size * 1e4)
    return {"images": len(images), "nuclei_per_1e4_px": float(np.mean(per_1e4)), "mean_area_px": float(np.mean(areas))}


def model_alone(out: Path, run: Path, n: int, steps: int) -> dict:
    model = load_model(run)
    norm = Normalizer(**model.cfg.data.meta["normalizer"])
    train = [io.read(f)[0][0].astype(np.float32) for f in sorted((out / "train").iterdir())]
    rng = np.random.default_rng(0)
    res = {}
    for size in (64, 128):
        if len(train) == 1:  # one large image (inpaint_ihc.sh): n random crops of it
            t = train[0]
            ys, xs = rng.integers(0, t.shape[0] - size, n), rng.integers(0, t.shape[1] - size, n)
            real = [t[y:y + size, x:x + size] for y, x in zip(ys, xs)]
        else:                # tiles (inpaint_he.sh): a random crop of each of n random tiles
            real = []
            for t in (train[i] for i in rng.integers(0, len(train), n)):
                y, x = rng.integers(0, t.shape[0] - size + 1), rng.integers(0, t.shape[1] - size + 1)
                real.append(t[y:y + size, x:x + size])
        with torch.no_grad():
            x = sample_batch(model.net, model.cfg, list(range(n)), steps=steps, shape=[1, size, size],
                             precision="bf16")
        gen = [norm.denormalize(t, "float32")[0] for t in x]
        res[f"{size}px"] = {"real_crops": nuclei_stats(real), "samples": nuclei_stats(gen)}
    return res


def fills(eval_dir: Path, intact: Path) -> dict:
    from skimage.measure import regionprops

    found = {"intact": [], "repaired": []}
    for mask_file in sorted((eval_dir / "masks").iterdir()):
        stem = mask_file.stem.rsplit("_bin", 1)[0]
        x = io.read(intact / f"{stem}{mask_file.suffix}")[0]
        y = io.read(eval_dir / "repaired" / mask_file.name)[0]
        m = io.read(mask_file)[0][0] > 0
        for key, img in (("intact", x), ("repaired", y)):
            for p in regionprops(segment_nuclei(img)):
                if m[tuple(int(round(c)) for c in p.centroid)]:
                    c = p.coords
                    found[key].append((p.area, bool(m[c[:, 0], c[:, 1]].mean() < 1)))
    res = {}
    for key, rows in found.items():
        a = np.array([r[0] for r in rows], float)
        res[key] = {"nuclei": len(rows), "mean_area_px": float(a.mean()), "median_area_px": float(np.median(a)),
                    f"small_under_{SMALL_PX}px": int((a < SMALL_PX).sum()),
                    "straddling_mask_edge": int(sum(r[1] for r in rows))}
    res["area_ratio"] = res["repaired"]["mean_area_px"] / res["intact"]["mean_area_px"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--run", type=Path, default=None, help="the model (default: OUT/run)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    res = {"model_alone": model_alone(args.out, args.run or args.out / "run", args.n, args.steps),
           "fills": {d.name: fills(d, args.out / "intact") for d in sorted(args.out.glob("eval_*"))
                     if (d / "masks").is_dir()}}
    for size, r in res["model_alone"].items():
        for k, v in r.items():
            print(f"{size} {k:10s}: {v['nuclei_per_1e4_px']:.1f} nuclei per 10^4 px, mean area {v['mean_area_px']:.0f} px")
    for name, r in res["fills"].items():
        print(f"{name}: in-mask nuclei " + "; ".join(
            f"{k} {v['nuclei']} (mean area {v['mean_area_px']:.0f} px, median {v['median_area_px']:.0f}, "
            f"{v[f'small_under_{SMALL_PX}px']} under {SMALL_PX} px, {v['straddling_mask_edge']} on the mask edge)"
            for k, v in r.items() if isinstance(v, dict)) + f"; area ratio {r['area_ratio']:.2f}")
    tmp = args.out / ".bias.json.tmp"
    tmp.write_text(json.dumps(res, indent=2))
    tmp.replace(args.out / "bias.json")


if __name__ == "__main__":
    main()
