"""Does the uncertainty mean something? Per-pixel spread against the actual error of a paired prediction.

- Spearman rank correlation between the uncertainty map (std) and the absolute error, per image and pooled;
- sparsification (Ilg et al. 2018): remove the most uncertain pixels first and follow the mean absolute error of
  the rest; the oracle removes the largest errors first. AUSE is the area between the two curves (both divided by
  the error with nothing removed): 0 is a perfect ranking, a random ranking gives about the oracle's area.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurodiff.data import io
from neurodiff.errors import NeurodiffError

FRACTIONS = np.linspace(0.0, 0.95, 20)


def spearman(u: np.ndarray, e: np.ndarray, n: int = 200_000, seed: int = 0) -> float:
    """Spearman's rho of two equally shaped arrays (a random subset of n pixels for large ones)."""
    from scipy.stats import spearmanr

    u, e = u.ravel().astype(np.float64), e.ravel().astype(np.float64)
    if u.size > n:
        pick = np.random.default_rng(seed).choice(u.size, n, replace=False)
        u, e = u[pick], e[pick]
    if np.ptp(u) == 0 or np.ptp(e) == 0:
        return float("nan")
    return float(spearmanr(u, e).statistic)


def sparsification(u: np.ndarray, e: np.ndarray, fractions=FRACTIONS) -> tuple[np.ndarray, np.ndarray]:
    """(by uncertainty, oracle) curves: MAE of the pixels kept after removing each fraction, / the full MAE."""
    e = np.abs(e.ravel().astype(np.float64))
    full = e.mean()
    if full == 0:
        return np.zeros(len(fractions)), np.zeros(len(fractions))
    by_u = e[np.argsort(-u.ravel(), kind="stable")]
    by_e = np.sort(e)[::-1]
    n = e.size
    keep = [max(1, int(round(n * (1 - f)))) for f in fractions]
    cu = np.array([by_u[n - k:].mean() for k in keep]) / full
    co = np.array([by_e[n - k:].mean() for k in keep]) / full
    return cu, co


def _area(cu: np.ndarray, co: np.ndarray, fractions=FRACTIONS) -> float:
    gap = cu - co   # trapezoid rule over the fractions, per unit of the fraction range
    return float(np.sum((gap[1:] + gap[:-1]) * np.diff(fractions)) / 2 / (fractions[-1] - fractions[0]))


def ause(u: np.ndarray, e: np.ndarray, fractions=FRACTIONS) -> float:
    """Area between the sparsification curve by uncertainty and the oracle's."""
    return _area(*sparsification(u, e, fractions), fractions)


def calibration(real, fake, unc_dir: str | Path, mask_dir: str | Path | None = None) -> dict:
    """Uncertainty maps of ``unc_dir`` (matched to the ``fake`` files by name without suffix) against |fake - real|.

    ``real``/``fake`` are evaluate's ImageSets (arrays in data units, paired by file name); with ``mask_dir`` only
    the pixels where the mask of the same name is non-zero count (e.g. the tissue, not the empty background, whose
    zero error and zero spread would make any map look calibrated).
    """
    from neurodiff.metrics.evaluate import ImageSet

    unc = ImageSet(unc_dir)
    masks = None
    if mask_dir:
        ms = ImageSet(mask_dir)
        masks = {io.stem(n): a != 0 for n, a in zip(ms.names, ms.arrays)}
    by_stem = {io.stem(n): a for n, a in zip(unc.names, unc.arrays)}
    index = {n: i for i, n in enumerate(real.names)}
    rows, us, es = [], [], []
    for name, f in zip(fake.names, fake.arrays):
        u = by_stem.get(io.stem(name))
        if u is None:
            raise NeurodiffError(f"{unc_dir}: no uncertainty map for {name} (matched by name without suffix)")
        r = real.arrays[index[name]]
        if u.shape != f.shape:
            raise NeurodiffError(f"{unc_dir}/{name}: uncertainty map of shape {list(u.shape)}, the prediction is "
                                 f"{list(f.shape)}")
        e = np.abs(f.astype(np.float64) - r.astype(np.float64))
        if masks is not None:
            keep = masks.get(io.stem(name))
            if keep is None or keep.shape[1:] != u.shape[1:]:
                raise NeurodiffError(f"{mask_dir}: needs a mask of the image's size named like {name}")
            keep = np.broadcast_to(keep.any(0), u.shape[1:])
            u, e = u[:, keep], e[:, keep]
        rows.append({"file": name, "spearman": spearman(u, e), "ause": ause(u, e), "mean_std": float(u.mean()),
                     "mae": float(e.mean())})
        us.append(u.ravel())
        es.append(e.ravel())
    u_all, e_all = np.concatenate(us), np.concatenate(es)
    cu, co = sparsification(u_all, e_all)
    rows_ause = [r["ause"] for r in rows]
    finite = [r["spearman"] for r in rows if np.isfinite(r["spearman"])]
    return {"spearman_pooled": spearman(u_all, e_all), "spearman_per_image_mean": float(np.mean(finite)) if finite
            else float("nan"), "ause_pooled": _area(cu, co), "ause_per_image_mean": float(np.mean(rows_ause)), "fractions": FRACTIONS.tolist(), "curve_uncertainty": cu.tolist(),
            "curve_oracle": co.tolist(), "per_file": rows}


def sparsification_svg(m: dict, w: int = 480, h: int = 220) -> str:
    """The pooled sparsification curves (uncertainty vs oracle) as an inline SVG."""
    f, cu, co = (np.asarray(m[k]) for k in ("fractions", "curve_uncertainty", "curve_oracle"))
    top = max(1.0, float(cu.max()), float(co.max()))
    px = lambda v: 40 + (w - 60) * v / max(f[-1], 1e-9)   # noqa: E731
    py = lambda v: h - 30 - (h - 50) * v / top            # noqa: E731
    from neurodiff.metrics.report import polyline
    line = lambda vals, colour: polyline([px(a) for a in f], [py(b) for b in vals], colour)  # noqa: E731
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">'
            f'<rect width="{w}" height="{h}" fill="white"/>{line(cu, "#d62728")}{line(co, "#2ca02c")}'
            f'<text x="40" y="{h - 8}" font-size="11">fraction of pixels removed (most uncertain first) 0 → '
            f'{f[-1]:.2f}</text><text x="50" y="16" font-size="12" fill="#d62728">by uncertainty</text>'
            f'<text x="170" y="16" font-size="12" fill="#2ca02c">oracle (by error)</text>'
            f'<text x="4" y="{py(1.0):.0f}" font-size="11">1.0</text></svg>')
