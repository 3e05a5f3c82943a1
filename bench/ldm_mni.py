"""Helpers of bench/ldm_mni.sh: a 3D data set with a brain-volume covariate from the MNI152 template, and the
measurements on generated volumes.

  python bench/ldm_mni.py prepare OUT [--n-train 48] [--n-test 8]
  python bench/ldm_mni.py measure OUT GENERATED_DIR [--real OUT/train]

prepare: each volume is the template under a random affine (isotropic scale 0.85-1.15 with +-4 % per axis, a
rotation of up to 6 degrees about the vertical axis) resampled on a 64x80x64 grid of 2.5 mm (NIfTI with that
affine); its covariate is the brain volume in mL (the template is skull-stripped: voxels > 0, transformed the
same way). measure: brain volume of generated volumes (voxels above half the real volumes' median foreground
intensity), Pearson r against the requested value from the manifest, and pairwise MS-SSIM of generated and real.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

GRID, SPACING = (64, 80, 64), 2.5


def _volume(t1, brain, rng):
    from scipy.ndimage import affine_transform

    s = rng.uniform(0.85, 1.15) * (1 + rng.uniform(-0.04, 0.04, 3))
    a = np.deg2rad(rng.uniform(-6, 6))
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    # output voxel p (mm from the grid centre) shows template point c + rot @ (p / s)
    m = rot @ np.diag(SPACING / s)
    c_in = np.array([np.mean(np.nonzero(brain.any(axis=tuple(j for j in range(3) if j != i)))) for i in range(3)])
    c_out = (np.array(GRID) - 1) / 2
    offset = c_in - m @ c_out
    x = affine_transform(t1, m, offset, output_shape=GRID, order=1)
    b = affine_transform(brain.astype(np.float32), m, offset, output_shape=GRID, order=1) > 0.5
    return np.clip(x, 0, 255).round().astype(np.uint8), float(b.sum() * SPACING ** 3 / 1000.0)


def prepare(out: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    from neurodiff.data import io
    from neurodiff.demo import mni_template_path

    t1 = io.read(mni_template_path())[0][0].astype(np.float32)
    brain = t1 > 0
    rng = np.random.default_rng(seed)
    affine = np.diag([SPACING, SPACING, SPACING, 1.0]).tolist()
    meta = io.ImageMeta(format="nifti", dtype="uint8", spacing=(SPACING,) * 3, affine=affine)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for k in range(n):
            x, ml = _volume(t1, brain, rng)
            name = f"{split}_{k:03d}.nii.gz"
            io.write(out / split / name, x[None], meta)
            rows.append({"file": name, "brain_volume_ml": f"{ml:.2f}"})
        with open(out / f"{split}_covariates.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["file", "brain_volume_ml"])
            w.writeheader()
            w.writerows(rows)
        print(f"{split}: {n} volumes, brain volume {min(float(r['brain_volume_ml']) for r in rows):.0f}-"
              f"{max(float(r['brain_volume_ml']) for r in rows):.0f} mL")


def _load(folder: Path) -> tuple[list[str], np.ndarray]:
    from neurodiff.data import io

    files = sorted(folder.glob("*.nii.gz"))
    return [f.name for f in files], np.stack([io.read(f)[0][0].astype(np.float32) for f in files])


def measure(out: Path, gen: Path, real: Path) -> dict:
    import torch

    from neurodiff.metrics import image

    _, xr = _load(real)
    thr = 0.5 * float(np.median(xr[xr > 0]))
    names, xg = _load(gen)
    ml = (xg > thr).sum(axis=(1, 2, 3)) * SPACING ** 3 / 1000.0
    res = {"n": len(names), "threshold": thr, "measured_ml": ml.tolist()}
    rows = {r["file"]: r for r in csv.DictReader(open(gen / "manifest.csv"))}
    req = [rows[n]["covariates"] for n in names]
    if all(req):
        want = np.array([float(c.split("=")[1]) for c in req])
        res["requested_ml"] = want.tolist()
        res["pearson_r"] = float(np.corrcoef(want, ml)[0, 1])
        res["mean_abs_err_ml"] = float(np.abs(ml - want).mean())
    # the real volumes measured the same way: how well the measurement itself tracks the true covariate
    cov = {r["file"]: float(r["brain_volume_ml"]) for r in csv.DictReader(open(real.parent / f"{real.name}_covariates.csv"))}
    rn, _ = _load(real)
    res["real_measure_pearson_r"] = float(np.corrcoef([cov[n] for n in rn], (xr > thr).sum(axis=(1, 2, 3)))[0, 1])
    to_t = lambda a: torch.from_numpy(a / 127.5 - 1.0)[:, None]  # noqa: E731
    pairs = min(100, len(xg) * (len(xg) - 1) // 2)
    res["ms_ssim_generated"] = float(image.pairwise_ms_ssim(to_t(xg), pairs, 2.0, 0)[0])
    res["ms_ssim_real"] = float(image.pairwise_ms_ssim(to_t(xr), min(100, len(xr) * (len(xr) - 1) // 2), 2.0, 0)[0])
    (gen / "measure.json").write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, list)}, indent=2))
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["prepare", "measure"])
    p.add_argument("out", type=Path)
    p.add_argument("generated", type=Path, nargs="?")
    p.add_argument("--n-train", type=int, default=48)
    p.add_argument("--n-test", type=int, default=8)
    a = p.parse_args()
    if a.what == "prepare":
        prepare(a.out, a.n_train, a.n_test)
    else:
        measure(a.out, a.generated, a.out / "train")
