"""Where do the inpainting bench's nuclei-size errors come from: the model, or the fill at the mask's edge?

    python bench/inpaint_bias.py OUT [--run RUN] [--n 16] [--steps 30]

OUT: a folder made by bench/inpaint_ihc.sh or inpaint_he.sh (run/, train/, intact/, eval_*/). Two checks, written to
OUT/bias.json and printed:
1. The model alone: ``--n`` unconditional samples at the training size (64^2) and at the evaluation size (128^2)
   against as many random crops of the training image(s): nuclei per 10^4 px and mean nucleus area (px).
2. The fills: for every eval_*/ folder, the nuclei whose centre lies in a mask, pooled over its repaints, in the
   intact and in the repaired images: count, mean and median area, how many are small (< 50 px), and how many
   straddle the mask's edge (part of their pixels known), and the mean intensity inside the masks.
3. The fill's brightness where context is plentiful: ``--n`` random 64^2 crops of the intact images with the centre
   32^2 masked, repainted together (``--steps`` steps, jump 3, resample 3): mean intensity inside the masks of the
   fills, of the truth, and of the training images. A model that ignores its context fills with its training mean.
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
from neurodiff.tasks.generate import build_denoiser, make_cond, sample_batch
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


def model_alone(out: Path, model, n: int, steps: int) -> dict:
    norm = Normalizer(**model.cfg.data.meta["normalizer"])
    train = images(out / "train")
    rng = np.random.default_rng(0)
    res = {}
    for size in (64, 128):
        real = random_crops(train, size, n, rng)
        with torch.no_grad():
            x = sample_batch(model.net, model.cfg, list(range(n)), steps=steps, shape=[1, size, size],
                             precision="bf16")
        gen = [norm.denormalize(t, "float32")[0] for t in x]
        res[f"{size}px"] = {"real_crops": nuclei_stats(real), "samples": nuclei_stats(gen)}
    return res


def random_crops(train: list[np.ndarray], size: int, n: int, rng) -> list[np.ndarray]:
    """``n`` random ``size``^2 crops of the training images: of the one large image (inpaint_ihc.sh), or one of each
    of ``n`` random tiles (inpaint_he.sh)."""
    if len(train) == 1:
        t = train[0]
        ys, xs = rng.integers(0, t.shape[0] - size, n), rng.integers(0, t.shape[1] - size, n)
        return [t[y:y + size, x:x + size] for y, x in zip(ys, xs)]
    real = []
    for t in (train[i] for i in rng.integers(0, len(train), n)):
        y, x = rng.integers(0, t.shape[0] - size + 1), rng.integers(0, t.shape[1] - size + 1)
        real.append(t[y:y + size, x:x + size])
    return real


def images(folder: Path) -> list[np.ndarray]:
    """The first channel of every image in ``folder`` (sorted), float32."""
    return [io.read(f)[0][0].astype(np.float32) for f in sorted(folder.iterdir())]


def brightness(out: Path, model, n: int, steps: int) -> dict:
    from neurodiff.diffusion.denoiser import make_precond
    from neurodiff.diffusion.schedules import sampling_sigmas
    from neurodiff.tasks.inpaint import jump_schedule, repaint

    cfg, d = model.cfg, model.cfg.diffusion
    norm = Normalizer(**cfg.data.meta["normalizer"])
    intact = images(out / "intact")
    rng = np.random.default_rng(0)
    crops = []
    for k in range(n):
        t = intact[k % len(intact)]
        y, x = rng.integers(0, t.shape[0] - 64 + 1), rng.integers(0, t.shape[1] - 64 + 1)
        crops.append(t[y:y + 64, x:x + 64])
    known = torch.from_numpy(np.stack([norm.normalize(c[None]) for c in crops])).double()
    mask = torch.zeros(n, 1, 64, 64, dtype=torch.bool)
    mask[..., 16:48, 16:48] = True
    precond = make_precond(d)
    sigmas = sampling_sigmas(precond, steps, d.sigma_min, d.sigma_max, d.rho).double()
    D = build_denoiser(model.net, precond, make_cond(cfg, [None] * n, None, "cpu"), n, 1.0, True, [1, 64, 64])
    with torch.no_grad():
        y = repaint(lambda a, s: D(a.float(), s).double(), known, mask, sigmas, jump_schedule(steps, 3, 3),
                    [torch.Generator().manual_seed(k) for k in range(n)])
    fill = [float(norm.denormalize(y[k], "float32")[0][16:48, 16:48].mean()) for k in range(n)]
    truth = [float(c[16:48, 16:48].mean()) for c in crops]
    return {"crops": n, "fill_mean": float(np.mean(fill)), "truth_mean": float(np.mean(truth)),
            "fill_truth_correlation": float(np.corrcoef(fill, truth)[0, 1]),
            "training_images_mean": float(np.mean([t.mean() for t in images(out / "train")])),
            "intact_images_mean": float(np.mean([t.mean() for t in intact]))}


def fills(eval_dir: Path, intact: Path) -> dict:
    from skimage.measure import regionprops

    found, level = {"intact": [], "repaired": []}, {"intact": [], "repaired": []}
    for mask_file in sorted((eval_dir / "masks").iterdir()):
        stem = mask_file.stem.rsplit("_bin", 1)[0]
        x = io.read(intact / f"{stem}{mask_file.suffix}")[0]
        y = io.read(eval_dir / "repaired" / mask_file.name)[0]
        m = io.read(mask_file)[0][0] > 0
        for key, img in (("intact", x), ("repaired", y)):
            level[key].append(float(img[0][m].mean()))
            for p in regionprops(segment_nuclei(img)):
                if m[tuple(int(round(c)) for c in p.centroid)]:
                    c = p.coords
                    found[key].append((p.area, bool(m[c[:, 0], c[:, 1]].mean() < 1)))
    res = {}
    for key, rows in found.items():
        a = np.array([r[0] for r in rows], float)
        res[key] = {"nuclei": len(rows), "mean_area_px": float(a.mean()), "median_area_px": float(np.median(a)),
                    f"small_under_{SMALL_PX}px": int((a < SMALL_PX).sum()),
                    "straddling_mask_edge": int(sum(r[1] for r in rows)),
                    "mean_intensity_in_mask": float(np.mean(level[key]))}
    res["area_ratio"] = res["repaired"]["mean_area_px"] / res["intact"]["mean_area_px"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--run", type=Path, default=None, help="the model (default: OUT/run)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    model = load_model(args.run or args.out / "run")
    res = {"model_alone": model_alone(args.out, model, args.n, args.steps),
           "fills": {d.name: fills(d, args.out / "intact") for d in sorted(args.out.glob("eval_*"))
                     if (d / "masks").is_dir()},
           "brightness": brightness(args.out, model, args.n, args.steps)}
    for size, r in res["model_alone"].items():
        for k, v in r.items():
            print(f"{size} {k:10s}: {v['nuclei_per_1e4_px']:.1f} nuclei per 10^4 px, mean area {v['mean_area_px']:.0f} px")
    for name, r in res["fills"].items():
        print(f"{name}: in-mask nuclei " + "; ".join(
            f"{k} {v['nuclei']} (mean area {v['mean_area_px']:.0f} px, median {v['median_area_px']:.0f}, "
            f"{v[f'small_under_{SMALL_PX}px']} under {SMALL_PX} px, {v['straddling_mask_edge']} on the mask edge)"
            for k, v in r.items() if isinstance(v, dict)) + f"; area ratio {r['area_ratio']:.2f}; mean intensity in "
            f"the masks: intact {r['intact']['mean_intensity_in_mask']:.1f}, repaired {r['repaired']['mean_intensity_in_mask']:.1f}")
    b = res["brightness"]
    print(f"{b['crops']} 64^2 crops, centre 32^2 repainted: mean intensity of the fills {b['fill_mean']:.1f}, of the truth "
          f"{b['truth_mean']:.1f} (correlation {b['fill_truth_correlation']:.2f}); training images {b['training_images_mean']:.1f}, "
          f"intact images {b['intact_images_mean']:.1f}")
    tmp = args.out / ".bias.json.tmp"
    tmp.write_text(json.dumps(res, indent=2))
    tmp.replace(args.out / "bias.json")


if __name__ == "__main__":
    main()
