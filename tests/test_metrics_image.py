"""Image metrics against scikit-image (SSIM), an independent scipy MS-SSIM, and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data, filters
from skimage.metrics import structural_similarity

from neurodiff.errors import NeurodiffError
from neurodiff.metrics.image import _draw_pairs, ms_ssim, pairwise_ms_ssim, pearson, psnr, ssim

W5 = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def t(*arrays) -> torch.Tensor:
    """Single-channel arrays -> [N, 1, *S] float64."""
    return torch.from_numpy(np.stack(arrays)[:, None].astype(np.float64))


@pytest.fixture(scope="module")
def cam():
    return data.camera().astype(np.float64) / 255.0


@pytest.fixture(scope="module")
def cam_degraded(cam):
    rng = np.random.default_rng(0)
    return np.clip(filters.gaussian(cam, 1.0) + rng.normal(0, 0.08, cam.shape), 0, 1)


@pytest.fixture(scope="module")
def brain(mni):
    """A real 3D volume: a 40 x 48 x 36 crop of the MNI template at 2 mm, scaled to [0, 1]."""
    v = mni[18:178:2, 20:212:2, 30:174:2].astype(np.float64) / 255.0
    return v[20:60, 24:72, 18:54]


def sk_ssim(a, b, L, channel_axis=None):
    return structural_similarity(a, b, data_range=L, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=channel_axis)


def ref_ms_ssim(a, b, L, weights=W5):
    """Independent MS-SSIM (Wang et al. 2003) with scipy: reflect Gaussian filter then crop 5, block means."""
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    f = lambda z: ndimage.gaussian_filter(z, 1.5, truncate=3.5, mode="reflect")
    n = 0
    while n < len(weights) and min(s // 2 ** n for s in a.shape) >= 11:
        n += 1
    w = np.array(weights) if n == len(weights) else np.array(weights[:n]) / sum(weights[:n])
    out = 1.0
    for j in range(n):
        ma, mb = f(a), f(b)
        va, vb, vab = f(a * a) - ma ** 2, f(b * b) - mb ** 2, f(a * b) - ma * mb
        cs = (2 * vab + c2) / (va + vb + c2)
        s = cs * (2 * ma * mb + c1) / (ma ** 2 + mb ** 2 + c1)
        crop = tuple(slice(5, -5) for _ in a.shape)
        val = (s if j == n - 1 else cs)[crop].mean()
        out *= max(val, 0.0) ** w[j]
        even = tuple(slice(0, d - d % 2) for d in a.shape)
        a, b = a[even], b[even]
        shape = sum(([d // 2, 2] for d in a.shape), [])
        axes = tuple(range(1, 2 * a.ndim, 2))
        a, b = a.reshape(shape).mean(axes), b.reshape(shape).mean(axes)
    return out


# --- identities and hand-computed values -------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 1, 64, 48), (2, 2, 24, 26, 22)])
def test_identical_inputs_give_one(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x, 1.0), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ms_ssim(x, x, 1.0), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert torch.isinf(psnr(x, x, 1.0)).all()


def test_psnr_of_constant_offset_is_hand_computed():
    x = torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    for L, off in [(1.0, 0.1), (2.0, 0.05), (255.0, 3.0)]:
        expected = 10 * math.log10(L ** 2 / off ** 2)
        got = psnr(x, x + off, L)
        assert got.shape == (3,)
        assert torch.allclose(got, torch.full((3,), expected, dtype=torch.float64), atol=1e-9)


def test_pearson_of_affine_maps():
    x = torch.randn(4, 2, 16, 16, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(pearson(x, 2 * x + 3), torch.ones(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(pearson(x, -x), -torch.ones(4, dtype=torch.float64), atol=1e-12)
    y = torch.randn(4, 2, 16, 16, generator=torch.Generator().manual_seed(3))
    assert pearson(x, y).abs().max() < 0.2


def test_float32_inputs_are_computed_in_float64(cam, cam_degraded):
    x64, y64 = t(cam), t(cam_degraded)
    got = ssim(x64.float(), y64.float(), 1.0)
    assert got.dtype == torch.float64
    assert abs(got.item() - ssim(x64, y64, 1.0).item()) < 1e-6


# --- agreement with references -----------------------------------------------------------------------

def test_ssim_matches_skimage_2d(cam, cam_degraded):
    rng = np.random.default_rng(4)
    a, b = rng.random((70, 90)), rng.random((70, 90))
    pairs = [(cam, cam_degraded, 1.0), (cam, np.roll(cam, 3, axis=1), 1.0), (a, b, 1.0),
             (a, a + rng.normal(0, 0.2, a.shape), 2.0)]
    diffs = [abs(ssim(t(x), t(y), L).item() - sk_ssim(x, y, L)) for x, y, L in pairs]
    assert max(diffs) < 1e-6, diffs
    batch = ssim(t(cam, cam), t(cam_degraded, np.roll(cam, 3, axis=1)), 1.0)
    assert abs(batch[1].item() - sk_ssim(cam, np.roll(cam, 3, axis=1), 1.0)) < 1e-6


def test_ssim_matches_skimage_multichannel():
    rgb = data.astronaut()[::2, ::2].astype(np.float64) / 255.0
    noisy = np.clip(rgb + np.random.default_rng(5).normal(0, 0.1, rgb.shape), 0, 1)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    y = torch.from_numpy(noisy).permute(2, 0, 1)[None]
    assert abs(ssim(x, y, 1.0).item() - sk_ssim(rgb, noisy, 1.0, channel_axis=2)) < 1e-6


def test_ssim_matches_skimage_3d(brain):
    rng = np.random.default_rng(6)
    noisy = brain + rng.normal(0, 0.05, brain.shape)
    blurred = ndimage.gaussian_filter(brain, 1.2)
    vol = ndimage.gaussian_filter(rng.random((30, 26, 28)), 1.0)
    for x, y, L in [(brain, noisy, 1.0), (brain, blurred, 1.0), (vol, vol[::-1].copy(), 1.0)]:
        assert abs(ssim(t(x), t(y), L).item() - sk_ssim(x, y, L)) < 1e-6


def test_ms_ssim_matches_independent_reference_2d(cam, cam_degraded):
    rng = np.random.default_rng(7)
    a = filters.gaussian(rng.random((200, 176)), 2.0)
    cases = [(cam, cam_degraded), (cam, np.roll(cam, 5, axis=0)), (a, a + rng.normal(0, 0.02, a.shape)),
             (cam[:64, :80], cam_degraded[:64, :80])]  # 64 x 80: only 3 scales fit an 11 window
    diffs = [abs(ms_ssim(t(x), t(y), 1.0).item() - ref_ms_ssim(x, y, 1.0)) for x, y in cases]
    assert max(diffs) < 1e-6, diffs


def test_ms_ssim_matches_independent_reference_3d(brain):
    noisy = brain + np.random.default_rng(8).normal(0, 0.05, brain.shape)
    assert abs(ms_ssim(t(brain), t(noisy), 1.0).item() - ref_ms_ssim(brain, noisy, 1.0)) < 1e-6


def test_ms_ssim_close_to_torchmetrics(cam, cam_degraded):
    # Its cs terms equal ours, but torchmetrics averages the last-scale SSIM over the reflect-padded border
    # too (about 2e-4 here; more where borders differ, e.g. a rolled image), hence 1e-3 and not 1e-6.
    tm = pytest.importorskip("torchmetrics.functional.image")
    x, y = t(cam, cam), t(cam_degraded, filters.gaussian(cam, 2.0))
    ref = tm.multiscale_structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")
    assert (ms_ssim(x, y, 1.0) - ref).abs().max() < 1e-3


def test_ms_ssim_with_one_scale_is_clamped_ssim():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(9))
    y = torch.stack([x[0], 1 - x[1]])  # same local means, anti-correlated: SSIM < 0
    assert torch.allclose(ms_ssim(x, y, 1.0), ssim(x, y, 1.0).clamp(min=0), atol=1e-12)
    assert ssim(x, y, 1.0)[1] < -0.5
    assert ms_ssim(x, y, 1.0)[1] == 0  # clamped to 0 rather than nan from a fractional power


# --- masks -------------------------------------------------------------------------------------------

def test_masks_ignore_what_is_outside(cam, cam_degraded):
    x, y = t(cam[:128, :128]), t(cam_degraded[:128, :128])
    mask = torch.zeros(1, 1, 128, 128, dtype=torch.bool)
    mask[..., 20:90, 30:110] = True
    y2 = y.clone()
    y2[~mask] = torch.rand(int((~mask).sum()), dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    for f in (lambda a, b, m: psnr(a, b, 1.0, mask=m), lambda a, b, m: ssim(a, b, 1.0, mask=m), pearson):
        inside, changed = f(x, y, mask), f(x, y2, mask)
        assert torch.allclose(inside, changed, atol=1e-12)
        assert not torch.allclose(f(x, y, None), f(x, y2, None), atol=1e-3)  # the change does matter unmasked
    full = torch.ones_like(mask)
    assert torch.allclose(ssim(x, y, 1.0, mask=full), ssim(x, y, 1.0), atol=1e-12)
    sel = mask[0, 0]
    mse = ((x[0, 0][sel] - y[0, 0][sel]) ** 2).mean()
    assert abs(psnr(x, y, 1.0, mask=mask).item() - 10 * math.log10(1 / mse.item())) < 1e-9


def test_per_channel_mask_and_3d_mask():
    g = torch.Generator().manual_seed(11)
    x = torch.rand(2, 2, 20, 20, 20, generator=g)
    y = x + 0.1 * torch.randn(2, 2, 20, 20, 20, generator=g)
    mask = torch.zeros(2, 2, 20, 20, 20, dtype=torch.bool)
    mask[:, 0, 2:16, 3:17, 1:15] = True
    mask[:, 1, 5:19, 4:18, 6:20] = True
    y2 = torch.where(mask, y, torch.zeros_like(y))
    for f in (lambda a, b, m: psnr(a, b, 1.0, mask=m), lambda a, b, m: ssim(a, b, 1.0, mask=m), pearson):
        assert torch.allclose(f(x, y, mask), f(x, y2, mask), atol=1e-12)


# --- monotonicity ------------------------------------------------------------------------------------

def test_ssim_and_psnr_fall_as_noise_grows(cam):
    rng = np.random.default_rng(12)
    e = rng.normal(0, 1, cam.shape)
    x = t(cam, cam, cam)
    y = t(cam + 0.02 * e, cam + 0.05 * e, cam + 0.15 * e)
    for f in (ssim, psnr, ms_ssim):
        v = f(x, y, 1.0)
        assert v[0] > v[1] > v[2], (f.__name__, v)


# --- pairwise MS-SSIM --------------------------------------------------------------------------------

def test_pairwise_identical_samples_have_mean_one():
    x = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(13)).repeat(6, 1, 1, 1)
    mean, sd = pairwise_ms_ssim(x, n_pairs=10, data_range=1.0)
    assert abs(mean - 1) < 1e-12 and sd < 1e-12


def test_pairwise_noise_is_more_diverse_than_real_slices(mni):
    real = torch.from_numpy(np.stack([mni[18:178:2, 20:212:2, z][:64, :64] for z in range(70, 110, 4)]))
    real = real[:, None].double() / 127.5 - 1
    noise = torch.rand(10, 1, 64, 64, generator=torch.Generator().manual_seed(14)) * 2 - 1
    real_mean, _ = pairwise_ms_ssim(real, n_pairs=20)
    noise_mean, _ = pairwise_ms_ssim(noise, n_pairs=20)
    assert real_mean > 0.3 and noise_mean < 0.1 and noise_mean < real_mean - 0.3, (real_mean, noise_mean)


def test_pairwise_3d_is_deterministic_for_a_seed():
    x = torch.rand(8, 1, 16, 16, 16, generator=torch.Generator().manual_seed(15))
    a, b = pairwise_ms_ssim(x, n_pairs=12, seed=3), pairwise_ms_ssim(x, n_pairs=12, seed=3)
    assert a == b
    assert pairwise_ms_ssim(x, n_pairs=12, seed=4) != a
    pairs = _draw_pairs(8, 12, 3)
    assert len(set(pairs)) == 12 and all(i < j for i, j in pairs)
    assert len(_draw_pairs(4, 100, 0)) == 6  # fewer pairs than asked: all of them


# --- bad input ---------------------------------------------------------------------------------------

def test_bad_input_raises_neurodiff_error():
    x = torch.rand(2, 1, 32, 32)
    with pytest.raises(NeurodiffError, match=r"\(2, 1, 32, 32\) and \(2, 1, 32, 30\)"):
        ssim(x, torch.rand(2, 1, 32, 30), 1.0)
    for f in (lambda a, b: psnr(a, b, 1.0), lambda a, b: ssim(a, b, 1.0), lambda a, b: ms_ssim(a, b, 1.0),
              pearson):
        with pytest.raises(NeurodiffError, match="shapes must match"):
            f(x, torch.rand(2, 2, 32, 32))
        with pytest.raises(NeurodiffError, match=r"x: expected shape \[N, C, H, W\]"):
            f(x[0], x[0])
    with pytest.raises(NeurodiffError, match="data_range"):
        psnr(x, x, 0.0)
    with pytest.raises(NeurodiffError, match="mask"):
        psnr(x, x, 1.0, mask=torch.ones(2, 3, 32, 32, dtype=torch.bool))
    with pytest.raises(NeurodiffError, match="mask"):
        ssim(x, x, 1.0, mask=torch.ones(2, 1, 32, 32))
    with pytest.raises(NeurodiffError, match="no full SSIM window"):
        small = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
        small[..., :8, :8] = True
        ssim(x, x, 1.0, mask=small)
    with pytest.raises(NeurodiffError, match="win"):
        ms_ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), 1.0)
    with pytest.raises(NeurodiffError, match="at least 2 samples"):
        pairwise_ms_ssim(x[:1])
