"""Nuclei segmentation and cell statistics (count, density, size, shape) for judging histology.

numpy / scipy / scikit-image only; scikit-image is imported inside the functions so that
importing this module stays light (and never pulls in torch).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from scipy import ndimage as ndi

from neurodiff.errors import NeurodiffError

# millimetres per unit, for densities per mm^2 / mm^3 (same unit names as neurodiff.data.io)
_UNIT_MM = {"nm": 1e-6, "um": 1e-3, "mm": 1.0, "cm": 10.0, "m": 1000.0}
_UNIT_ALIASES = {"µm": "um", "μm": "um", "micron": "um", "microns": "um", "micrometer": "um",
                 "nanometer": "nm", "millimeter": "mm", "meter": "m"}
_SPLIT_DEPTH = 1.0  # px: how far the distance map must dip between two nuclei to split them
_STAT_KEYS = ("count", "density", "density_unit", "areas", "mean_area", "eccentricity", "solidity")


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < lo:
        raise NeurodiffError(f"{name}: expected an integer >= {lo}, got {value!r}")
    return int(value)


def segment_nuclei(image, *, bright: bool | None = None, min_area: int = 10, smooth_sigma: float = 1.0,
                   min_distance: int = 3, dims: int = 2) -> np.ndarray:
    """Label nuclei: Gaussian smoothing, Otsu threshold, small-object removal, distance-transform watershed.

    image: [H, W] or [C, H, W] (dims=2), [D, H, W] or [C, D, H, W] (dims=3); channels are averaged.
    bright=None takes the minority Otsu class as nuclei. Returns int32 labels, 0 = background."""
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    if dims not in (2, 3) or isinstance(dims, bool):
        raise NeurodiffError(f"dims: expected 2 or 3, got {dims!r}")
    if bright is not None and not isinstance(bright, (bool, np.bool_)):
        raise NeurodiffError(f"bright: expected True, False or None, got {bright!r}")
    min_area = _check_int("min_area", min_area, 0)
    min_distance = _check_int("min_distance", min_distance, 1)
    if isinstance(smooth_sigma, bool) or not isinstance(smooth_sigma, Real) or not smooth_sigma >= 0:
        raise NeurodiffError(f"smooth_sigma: expected a number >= 0, got {smooth_sigma!r}")
    x = np.asarray(image)
    want = "[H, W] or [C, H, W]" if dims == 2 else "[D, H, W] or [C, D, H, W]"
    if x.dtype.kind not in "biuf":
        raise NeurodiffError(f"image: expected a numeric {want} array, got dtype {x.dtype}")
    if x.ndim not in (dims, dims + 1):
        raise NeurodiffError(f"image: expected {want} for dims={dims}, got shape {x.shape}")
    if x.size == 0:
        raise NeurodiffError(f"image: expected a non-empty {want} array, got shape {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise NeurodiffError("image: expected finite values, got NaN or inf")
    if x.ndim == dims + 1:
        x = x.mean(axis=0)
    if smooth_sigma > 0:
        x = ndi.gaussian_filter(x, float(smooth_sigma))
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-9 * max(1.0, abs(hi)):  # flat image: nothing to separate
        return np.zeros(x.shape, np.int32)
    fg = x > threshold_otsu(x)
    if bright is None:
        bright = fg.mean() <= 0.5  # nuclei cover less of the image than the background
    mask = fg if bright else ~fg

    cc, n = ndi.label(mask)
    sizes = np.bincount(cc.ravel())
    keep = sizes >= min_area
    keep[0] = False
    mask = keep[cc]
    if mask.any():
        # holes (noise, pale nucleoli) make spurious distance peaks; fill those no bigger than a
        # typical nucleus, since a larger enclosed hole is real background between cells
        holes, nh = ndi.label(ndi.binary_fill_holes(mask) & ~mask)
        if nh:
            fill = np.bincount(holes.ravel()) <= np.median(sizes[1:][keep[1:]])
            fill[0] = False
            mask |= fill[holes]
    cc, n = ndi.label(mask)
    if n == 0:
        return np.zeros(x.shape, np.int32)

    dist = ndi.distance_transform_edt(mask)
    # distance maps of elongated nuclei have long ridges of near-equal maxima that peak_local_max
    # alone would seed several times (a "ladder" of cuts); so group peaks by the h-maximum
    # (prominence >= _SPLIT_DEPTH px) they sit on, one seed per group
    tops, _ = ndi.label(h_maxima(dist, _SPLIT_DEPTH))
    peaks = peak_local_max(dist, min_distance=min_distance, labels=cc, exclude_border=False)
    seeded = np.zeros(tops.max() + 1, bool)
    seeded[tops[tuple(peaks.T)]] = True
    seeded[0] = False
    markers = np.where(seeded[tops], tops, 0)
    nm = int(markers.max())
    # every component needs a seed, otherwise watershed leaves it unlabelled
    unseeded = np.setdiff1d(np.arange(1, n + 1), cc[markers > 0])
    if unseeded.size:
        markers = np.where(np.isin(cc, unseeded), cc + nm, markers)
    out = watershed(-dist, markers, mask=mask)
    _, inv = np.unique(out, return_inverse=True)  # consecutive labels, background stays 0
    return inv.reshape(out.shape).astype(np.int32)


def _eccentricity(coords: np.ndarray) -> float:
    # sqrt(1 - smallest/largest second-moment eigenvalue): regionprops' 2D definition, also valid in 3D
    if len(coords) < 2:
        return 0.0
    ev = np.linalg.eigvalsh(np.cov(coords.T, bias=True))
    return float(math.sqrt(max(0.0, 1.0 - ev[0] / ev[-1]))) if ev[-1] > 0 else 0.0


def cell_stats(labels: np.ndarray, spacing=None, *, unit: str = "um") -> dict:
    """Count, density, sizes and shapes of the objects in a 2D (or 3D) label image (0 = background).

    spacing: pixel size per axis (or one number) in `unit`; areas are then unit^2 (unit^3 in 3D) and
    density is per mm^2 (mm^3); without it areas are px^2 and density is per 1e6 px^2 (1e9 px^3)."""
    from skimage.measure import regionprops

    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise NeurodiffError(f"labels: expected an integer label image, got dtype {lab.dtype}")
    if lab.ndim not in (2, 3) or lab.size == 0:
        raise NeurodiffError(f"labels: expected a non-empty [H, W] or [D, H, W] array, got shape {lab.shape}")
    if lab.min() < 0:
        raise NeurodiffError("labels: expected labels >= 0 (0 = background), got negative values")
    nd = lab.ndim
    sp = None
    if spacing is not None:
        try:
            sp = np.broadcast_to(np.asarray(spacing, dtype=float), (nd,)).copy()
        except (TypeError, ValueError):
            sp = None
        if sp is None or np.ndim(spacing) > 1 or not (np.isfinite(sp).all() and (sp > 0).all()):
            raise NeurodiffError(f"spacing: expected one or {nd} positive numbers, got {spacing!r}")
    unit = _UNIT_ALIASES.get(str(unit).strip().lower(), str(unit).strip())
    if unit not in _UNIT_MM:
        raise NeurodiffError(f"unit: expected one of {', '.join(_UNIT_MM)}, got {unit!r}")

    props = regionprops(lab.astype(np.int64, copy=False))
    scale = np.ones(nd) if sp is None else sp
    px_size = float(np.prod(scale))
    areas = np.array([p.area for p in props], float) * px_size
    ecc = np.array([_eccentricity(p.coords * scale) for p in props], float)
    sol = []
    for p in props:
        try:
            sol.append(float(p.solidity))
        except Exception:  # degenerate hull (e.g. qhull on a flat 3D object): treat it as convex
            sol.append(1.0)
    count = len(props)
    area_px = float(lab.size)
    if sp is None:
        density, dunit, aunit = count / area_px * 10.0 ** (3 * nd), f"per 1e{3 * nd} px^{nd}", f"px^{nd}"
    else:
        density = count / (area_px * px_size * _UNIT_MM[unit] ** nd)
        dunit, aunit = f"per mm^{nd}", f"{unit}^{nd}"
    return {
        "count": count,
        "area_px": area_px,
        "image_area": area_px * px_size,
        "density": float(density),
        "density_unit": dunit,
        "area_unit": aunit,
        "areas": areas,
        "mean_area": float(areas.mean()) if count else math.nan,
        "median_area": float(np.median(areas)) if count else math.nan,
        "eccentricity": ecc,
        "solidity": np.array(sol, float),
    }


def _rel_err(fake, real) -> np.ndarray:
    f, r = np.asarray(fake, float), np.asarray(real, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.abs(f - r) / np.abs(r)
    return np.where((r == 0) & (f == 0), 0.0, e)  # 0/0 agrees; x/0 stays inf


def _nan_stat(fn, e: np.ndarray) -> float:
    # an image without nuclei has no mean area (NaN); it should not blank out the whole summary
    e = e[~np.isnan(e)]
    return float(fn(e)) if e.size else math.nan


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    # two-sample KS statistic without ks_2samp's p-value, which is slow for large pooled sets
    v = np.concatenate([a, b])
    ca = np.searchsorted(np.sort(a), v, side="right") / a.size
    cb = np.searchsorted(np.sort(b), v, side="right") / b.size
    return float(np.abs(ca - cb).max())


def _check_stats(name: str, stats) -> list:
    if isinstance(stats, dict) or not isinstance(stats, (list, tuple)) or not stats:
        raise NeurodiffError(f"{name}: expected a non-empty list of cell_stats dicts")
    for i, s in enumerate(stats):
        if not isinstance(s, dict) or any(k not in s for k in _STAT_KEYS):
            raise NeurodiffError(f"{name}[{i}]: expected a cell_stats dict with keys {', '.join(_STAT_KEYS)}")
    return list(stats)


def compare_cells(real: list[dict], fake: list[dict]) -> dict:
    """Compare cell_stats of real and fake images: per-pair relative errors (equal lengths only),
    set-level relative errors of mean density / mean area, and pooled Wasserstein / KS distances
    of object areas, eccentricities and solidities."""
    from scipy.stats import wasserstein_distance

    real, fake = _check_stats("real", real), _check_stats("fake", fake)
    units = {(s["density_unit"], s.get("area_unit")) for s in real + fake}
    if len(units) > 1:
        raise NeurodiffError(f"real/fake: expected one density/area unit for all stats, got {sorted(units)}")
    paired = len(real) == len(fake)
    out: dict = {"paired": paired, "n_real": len(real), "n_fake": len(fake),
                 "density_unit": real[0]["density_unit"]}
    if paired:
        for k in ("count", "density", "mean_area"):
            e = _rel_err([s[k] for s in fake], [s[k] for s in real])
            out[f"{k}_rel_err"] = e
            out[f"{k}_rel_err_median"] = _nan_stat(np.median, e)
            out[f"{k}_rel_err_mean"] = _nan_stat(np.mean, e)
    pooled = {}
    for key, name in (("areas", "area"), ("eccentricity", "eccentricity"), ("solidity", "solidity")):
        r = np.concatenate([np.asarray(s[key], float).ravel() for s in real])
        f = np.concatenate([np.asarray(s[key], float).ravel() for s in fake])
        pooled[name] = (r, f)
        ok = r.size > 0 and f.size > 0
        out[f"{name}_wasserstein"] = float(wasserstein_distance(r, f)) if ok else math.nan
        out[f"{name}_ks"] = _ks(r, f) if ok else math.nan
    r_area, f_area = pooled["area"]
    out["real_mean_density"] = float(np.mean([s["density"] for s in real]))
    out["fake_mean_density"] = float(np.mean([s["density"] for s in fake]))
    out["real_mean_area"] = float(r_area.mean()) if r_area.size else math.nan
    out["fake_mean_area"] = float(f_area.mean()) if f_area.size else math.nan
    out["set_density_rel_err"] = float(_rel_err(out["fake_mean_density"], out["real_mean_density"]))
    out["set_mean_area_rel_err"] = float(_rel_err(out["fake_mean_area"], out["real_mean_area"]))
    return out
