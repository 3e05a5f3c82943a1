"""Distribution distances between feature sets (FD, KID, precision/recall) and a feature-free patch distance.

Features are [N, D] arrays (numpy or torch); all statistics are computed in float64.
"""

from __future__ import annotations

import numpy as np

from neurodiff.errors import NeurodiffError


def _f64(f) -> np.ndarray:
    a = np.asarray(f.detach().cpu() if hasattr(f, "detach") else f, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise NeurodiffError(f"features: expected [N >= 2, D], got shape {list(a.shape)}")
    if not np.isfinite(a).all():
        raise NeurodiffError("features: contain NaN or infinite values")
    return a


def gaussian_stats(f) -> tuple[np.ndarray, np.ndarray]:
    a = _f64(f)
    return a.mean(0), np.cov(a, rowvar=False)


def frechet_from_stats(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau 1982; FID, Heusel et al. 2017)."""
    from scipy import linalg

    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():  # singular product: regularise (as the FID reference does)
        eps = np.eye(len(cov1)) * 1e-6
        covmean = linalg.sqrtm((cov1 + eps) @ (cov2 + eps))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean), 0.0))


def frechet_distance(f1, f2) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    return frechet_from_stats(*gaussian_stats(f1), *gaussian_stats(f2))


def kid(f1, f2, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3.

    Returns mean and sd over random subsets of min(subset_size, N1, N2) samples.
    """
    a, b = _f64(f1), _f64(f2)
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    vals = np.asarray(vals)
    return float(vals.mean()), float(vals.std(ddof=1) if len(vals) > 1 else 0.0)


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls in feature space."""
    r, f = _f64(real), _f64(fake)

    def dist(a, b):  # [len(a), len(b)] Euclidean, without an [N, N, D] intermediate
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
        return np.sqrt(np.maximum(d2, 0))

    def radii(a):
        return np.sort(dist(a, a), axis=1)[:, min(k, len(a) - 1)]   # column 0 is the point itself

    def covered(points, centres, rad):
        return (dist(points, centres) <= rad[None] * (1 + 1e-9)).any(1).mean()

    return float(covered(f, r, radii(r))), float(covered(r, f, radii(f)))


def random_patches(x, patch: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random patches of side ``patch`` from [N, C, *S] (2D or 3D) -> [n, C * patch^dims], each centred."""
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    spatial = x.shape[2:]
    if any(s < patch for s in spatial):
        raise NeurodiffError(f"patch size {patch} is larger than the images {list(spatial)}")
    idx = rng.integers(0, len(x), n)
    starts = [rng.integers(0, s - patch + 1, n) for s in spatial]
    out = np.stack([x[(i, slice(None), *(slice(s[j], s[j] + patch) for s in starts))].reshape(-1)
                    for j, i in enumerate(idx)])
    return out


def sliced_wasserstein(x, y, patch: int = 7, n_patches: int = 20000, n_proj: int = 128,
                       seed: int = 0) -> float:
    """Feature-free distance: sliced Wasserstein-1 between random patch distributions of two image sets.

    Patches of side ``patch`` (2D or 3D), random unit projections, W1 of the sorted 1-D projections, averaged.
    """
    rng = np.random.default_rng(seed)
    a, b = random_patches(x, patch, n_patches, rng), random_patches(y, patch, n_patches, rng)
    dirs = rng.standard_normal((a.shape[1], n_proj))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    return float(np.abs(pa - pb).mean())
