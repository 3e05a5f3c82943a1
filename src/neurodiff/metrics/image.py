"""Full-reference image metrics for [N, C, *S] images and volumes (len(S) in 2, 3): PSNR, SSIM, MS-SSIM,
Pearson correlation, and pairwise MS-SSIM as a sample-diversity score. All return per-sample float64 [N].

Everything is computed in float64 so that values agree with scikit-image to well below 1e-3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from neurodiff.errors import NeurodiffError

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _as64(t, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise NeurodiffError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.ndim not in (4, 5):
        raise NeurodiffError(f"{name}: expected shape [N, C, H, W] or [N, C, D, H, W], got {tuple(t.shape)}")
    if t.device.type == "mps":  # MPS has no float64
        t = t.cpu()
    return t.to(torch.float64)


def _pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as64(x, "x"), _as64(y, "y")
    if x.shape != y.shape:
        raise NeurodiffError(f"x and y: shapes must match, got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y.to(x.device)


def _range(data_range) -> float:
    L = float(data_range)
    if not (math.isfinite(L) and L > 0):
        raise NeurodiffError(f"data_range: expected a finite number > 0, got {data_range!r}")
    return L


def _mask(mask, x: torch.Tensor) -> torch.Tensor | None:
    """A bool mask [N, 1, *S] or [N, C, *S], broadcast to x's shape."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise NeurodiffError(f"mask: expected a bool torch.Tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    n, c, *s = x.shape
    if mask.ndim != x.ndim or mask.shape[0] != n or mask.shape[1] not in (1, c) or list(mask.shape[2:]) != s:
        raise NeurodiffError(f"mask: expected shape [{n}, 1 or {c}, {', '.join(map(str, s))}], "
                             f"got {tuple(mask.shape)}")
    return mask.to(x.device).expand_as(x)


def _masked_mean(v: torch.Tensor, m: torch.Tensor | None, what: str) -> torch.Tensor:
    """Per-sample mean of v [N, ...] over the entries where m is True (all entries when m is None)."""
    v = v.flatten(1)
    if m is None:
        return v.mean(1)
    m = m.flatten(1)
    count = m.sum(1)
    if bool((count == 0).any()):
        i = int((count == 0).nonzero()[0])
        raise NeurodiffError(f"mask: selects no {what} in sample {i}")
    return (v * m).sum(1) / count


def psnr(x, y, data_range: float, mask=None) -> torch.Tensor:
    """Peak signal-to-noise ratio [N] in dB, 10 log10(L^2 / MSE), MSE over all (or the masked) voxels and
    channels; inf where x == y."""
    x, y = _pair(x, y)
    L = _range(data_range)
    mse = _masked_mean((x - y) ** 2, _mask(mask, x), "voxels")
    return 10.0 * torch.log10(L ** 2 / mse)


def pearson(x, y, mask=None) -> torch.Tensor:
    """Pearson correlation [N] over all (or the masked) voxels and channels of each sample; nan if either
    is constant there."""
    x, y = _pair(x, y)
    m = _mask(mask, x)
    mx = _masked_mean(x, m, "voxels").view(-1, *[1] * (x.ndim - 1))
    my = _masked_mean(y, m, "voxels").view(-1, *[1] * (x.ndim - 1))
    dx, dy = x - mx, y - my
    cov = _masked_mean(dx * dy, m, "voxels")
    return cov / (_masked_mean(dx ** 2, m, "voxels") * _masked_mean(dy ** 2, m, "voxels")).sqrt()


def _gauss(win: int, sigma: float, device) -> torch.Tensor:
    """Normalised 1D Gaussian of win taps (win = 11, sigma = 1.5 is scipy's truncate=3.5 kernel)."""
    if not (isinstance(win, int) and win >= 1 and win % 2 == 1):
        raise NeurodiffError(f"win: expected an odd int >= 1, got {win!r}")
    if not (math.isfinite(float(sigma)) and sigma > 0):
        raise NeurodiffError(f"sigma: expected a number > 0, got {sigma!r}")
    r = torch.arange(win, dtype=torch.float64, device=device) - (win - 1) / 2
    g = torch.exp(-r ** 2 / (2.0 * float(sigma) ** 2))
    return g / g.sum()


def _blur_valid(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter with no padding ('valid'): [B, K, *S] -> [B, K, *(S - win + 1)].

    Valid filtering equals scikit-image's reflect-filter-then-crop, since the crop drops exactly the
    positions whose window touched the padding."""
    b, k, *s = t.shape
    t = t.reshape(b * k, 1, *s)
    conv = F.conv2d if len(s) == 2 else F.conv3d
    for d in range(len(s)):
        shape = [1, 1] + [1] * len(s)
        shape[2 + d] = g.numel()
        t = conv(t, g.view(shape))
    return t.reshape(b, k, *t.shape[2:])


def _ssim_maps(x, y, L: float, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps (Wang et al. 2004, eq. 13 with Gaussian-weighted population
    statistics) over valid window positions, [N, C, *(S - win + 1)] each."""
    win = g.numel()
    if min(x.shape[2:]) < win:
        raise NeurodiffError(f"win: window {win} is larger than the image, spatial shape {tuple(x.shape[2:])}")
    c = x.shape[1]
    mu = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], 1), g)
    ux, uy, xx, yy, xy = mu.split(c, 1)
    vx, vy, vxy = xx - ux * ux, yy - uy * uy, xy - ux * uy
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    cs = (2 * vxy + c2) / (vx + vy + c2)
    lum = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1)
    return lum * cs, cs


def _valid_mask(m: torch.Tensor | None, win: int) -> torch.Tensor | None:
    """Window positions whose whole win^d window lies inside the mask, so voxels outside it cannot count."""
    if m is None:
        return None
    box = torch.ones(win, dtype=torch.float64, device=m.device) / win
    inside = _blur_valid(m.to(torch.float64), box)
    return inside > 1.0 - 1e-9


def ssim(x, y, data_range: float, mask=None, sigma: float = 1.5, win: int = 11) -> torch.Tensor:
    """Structural similarity [N] (Wang et al. 2004): Gaussian window, C1 = (0.01 L)^2, C2 = (0.03 L)^2, mean
    over channels and valid (unpadded) window positions; with a mask, over windows lying fully inside it.
    Matches skimage structural_similarity(gaussian_weights=True, use_sample_covariance=False)."""
    x, y = _pair(x, y)
    m = _mask(mask, x)
    g = _gauss(win, sigma, x.device)
    s, _ = _ssim_maps(x, y, _range(data_range), g)
    return _masked_mean(s, _valid_mask(m, win), "full SSIM window")


def _scales(shape, win: int, n: int) -> int:
    """How many of n dyadic scales keep every spatial side >= win."""
    k = 0
    while k < n and min(sz // 2 ** k for sz in shape) >= win:
        k += 1
    return k


def ms_ssim(x, y, data_range: float, weights=MS_SSIM_WEIGHTS, sigma: float = 1.5, win: int = 11) -> torch.Tensor:
    """Multi-scale SSIM [N] (Wang et al. 2003, eq. 7): prod_j cs_j^w_j, SSIM at the last scale, 2x average pooling
    between; cs / SSIM (means over channels and positions) are clamped at 0 before the power, as is common.
    Images too small for all scales (side // 2^j < win) use the first scales that fit, weights renormalised."""
    x, y = _pair(x, y)
    L = _range(data_range)
    w = [float(v) for v in weights]
    if not w or any(not (math.isfinite(v) and v >= 0) for v in w) or sum(w) <= 0:
        raise NeurodiffError(f"weights: expected a non-empty sequence of numbers >= 0, got {weights!r}")
    g = _gauss(win, sigma, x.device)
    k = _scales(x.shape[2:], win, len(w))
    if k == 0:
        raise NeurodiffError(f"win: window {win} is larger than the image, spatial shape {tuple(x.shape[2:])}")
    w = torch.tensor(w, dtype=torch.float64, device=x.device)
    if k < len(w):  # the standard weights sum to 1.0001, so renormalise only when scales were dropped
        w = w[:k] / w[:k].sum()
    pool = F.avg_pool2d if x.ndim == 4 else F.avg_pool3d
    vals = []
    for j in range(k):
        s, cs = _ssim_maps(x, y, L, g)
        vals.append((s if j == k - 1 else cs).flatten(1).mean(1))
        if j < k - 1:
            x, y = pool(x, 2), pool(y, 2)  # floor: an odd last row / column is dropped
    v = torch.stack(vals, 1).clamp(min=0)
    return (v ** w).prod(1)


def _draw_pairs(n: int, n_pairs: int, seed: int) -> list[tuple[int, int]]:
    """n_pairs distinct unordered pairs i < j of range(n), or all of them if there are no more."""
    total = n * (n - 1) // 2
    if n_pairs >= total:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    gen = torch.Generator().manual_seed(seed)
    chosen: dict[tuple[int, int], None] = {}  # insertion-ordered set: the order is part of reproducibility
    while len(chosen) < n_pairs:
        i, j = torch.randint(0, n, (2,), generator=gen).tolist()
        if i != j:
            chosen[(min(i, j), max(i, j))] = None
    return list(chosen)


def pairwise_ms_ssim(x, n_pairs: int = 100, data_range: float = 2.0, seed: int = 0,
                     batch: int = 16) -> tuple[float, float]:
    """Sample diversity: mean and (population) sd of MS-SSIM over n_pairs random distinct pairs i != j of
    the samples in x [N, C, *S] (all pairs if there are fewer); lower mean = more diverse. Pairs come from seed."""
    x = _as64(x, "x")
    if x.shape[0] < 2:
        raise NeurodiffError(f"x: expected at least 2 samples for pairwise MS-SSIM, got {x.shape[0]}")
    if not (isinstance(n_pairs, int) and n_pairs >= 1):
        raise NeurodiffError(f"n_pairs: expected an int >= 1, got {n_pairs!r}")
    pairs = torch.tensor(_draw_pairs(x.shape[0], n_pairs, seed), device=x.device)
    vals = []
    for b in range(0, len(pairs), batch):  # bounded memory for large volumes
        p = pairs[b:b + batch]
        vals.append(ms_ssim(x[p[:, 0]], x[p[:, 1]], data_range))
    v = torch.cat(vals)
    return float(v.mean()), float(v.std(correction=0))
