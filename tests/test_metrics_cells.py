"""Tests for neurodiff.metrics.cells: nuclei segmentation, cell statistics and their comparison."""

import os
import subprocess
import sys

import numpy as np
import pytest

from neurodiff.errors import NeurodiffError
from neurodiff.metrics.cells import cell_stats, compare_cells, segment_nuclei


def place_disks(n, seed, shape=(256, 256), rmin=5, rmax=9, gap=4):
    """n (centre, radius) pairs, radius rmin..rmax, at least `gap` px between edges and from the border."""
    rng = np.random.default_rng(seed)
    disks = []
    while len(disks) < n:
        r = int(rng.integers(rmin, rmax + 1))
        c = rng.uniform(r + gap, np.array(shape) - r - gap)
        if all(np.hypot(*(c - c2)) >= r + r2 + gap for c2, r2 in disks):
            disks.append((c, r))
    return disks


def render(disks, shape=(256, 256), scale=1.0, bright=True, noise=0.05, seed=0):
    """Disks (radii times `scale`) at 0.8 on 0.2 (or inverted), plus Gaussian noise; also the true pixel areas."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, 0.2)
    areas = []
    for c, r in disks:
        d = np.hypot(yy - c[0], xx - c[1]) <= r * scale
        img[d] = 0.8
        areas.append(int(d.sum()))
    if not bright:
        img = 1.0 - img
    img = img + np.random.default_rng(seed).normal(0, noise, shape)
    return img, np.array(areas, float)


@pytest.fixture(scope="module")
def disk_sets():
    """Three images of 17 separated disks each, as (disks, image, true areas)."""
    out = []
    for seed in range(3):
        disks = place_disks(17, seed, gap=6)  # gap leaves room for the 1.2x larger variant
        img, areas = render(disks, seed=seed)
        out.append((disks, img, areas))
    return out


@pytest.mark.parametrize("bright", [True, False])
@pytest.mark.parametrize("polarity_arg", ["auto", "explicit"])
def test_separated_disks_count_exact_and_area(bright, polarity_arg):
    disks = place_disks(17, seed=11)
    img, areas = render(disks, bright=bright, seed=3)
    img = np.round(img * 1000).astype(np.int16)  # any dtype
    labels = segment_nuclei(img, bright=None if polarity_arg == "auto" else bright)
    assert labels.dtype == np.int32 and labels.shape == img.shape
    s = cell_stats(labels)
    assert s["count"] == 17
    assert abs(s["mean_area"] / areas.mean() - 1) < 0.10
    assert np.all(s["solidity"] > 0.85) and np.all(s["eccentricity"] < 0.5)


def test_channels_are_averaged():
    img, _ = render(place_disks(17, seed=5), seed=5)
    stack = np.stack([img, img + np.random.default_rng(1).normal(0, 0.05, img.shape), img])
    assert cell_stats(segment_nuclei(stack.astype(np.float32)))["count"] == 17


def test_touching_disks_are_split_but_elongated_nucleus_is_not():
    yy, xx = np.mgrid[:80, :100]
    img = ((np.hypot(yy - 40, xx - 40) <= 10) | (np.hypot(yy - 40, xx - 58) <= 10)).astype(float)
    img += np.random.default_rng(0).normal(0, 0.05, img.shape)
    labels = segment_nuclei(img)
    assert labels.max() == 2
    # the cut lies near the neck at x = 49, so both halves are of similar size
    a, b = np.bincount(labels.ravel())[1:]
    assert abs(a - b) < 0.15 * (a + b)
    # a long ellipse has a ridge of near-equal distance maxima: it must stay one object
    ell = (((yy - 40) / 6.0) ** 2 + ((xx - 50) / 40.0) ** 2 <= 1).astype(float)
    assert segment_nuclei(ell + np.random.default_rng(1).normal(0, 0.05, ell.shape)).max() == 1


def test_real_histology_smoke():
    # Smoke test on real data: stroma of scikit-image's bundled IHC image (colon tissue, hematoxylin
    # nuclei). By eye the crop holds ~40 nuclei; segmentation gave 43, so assert 43 +- 20%.
    from skimage import color, data

    crop = data.immunohistochemistry()[260:500, 150:250]
    hema = color.rgb2hed(crop)[..., 0]
    s = cell_stats(segment_nuclei(hema))
    assert 35 <= s["count"] <= 51
    assert 50 <= s["median_area"] <= 150  # px^2: nuclei of ~8-14 px across at this magnification


def test_empty_and_flat_images_give_no_objects():
    assert segment_nuclei(np.zeros((32, 32))).max() == 0
    s = cell_stats(np.zeros((32, 32), np.int32))
    assert s["count"] == 0 and s["density"] == 0 and np.isnan(s["mean_area"]) and s["areas"].size == 0


def test_3d_spheres():
    zz, yy, xx = np.mgrid[:40, :48, :48]
    centres = [(10, 12, 12), (10, 35, 30), (28, 14, 34), (29, 34, 12), (20, 24, 24)]
    vol = np.zeros(zz.shape)
    for c in centres:
        vol[np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= 5] = 1.0
    vol += np.random.default_rng(0).normal(0, 0.05, vol.shape)
    labels = segment_nuclei(vol, dims=3)
    s = cell_stats(labels, spacing=(2.0, 1.0, 1.0))
    assert s["count"] == 5 and s["density_unit"] == "per mm^3" and s["area_unit"] == "um^3"
    assert abs(s["mean_area"] / (2 * 4 / 3 * np.pi * 125) - 1) < 0.15
    assert cell_stats(labels)["density_unit"] == "per 1e9 px^3"
    # without dims=3 a 3D array is [C, H, W]: channels averaged into one 2D image
    assert segment_nuclei(vol).shape == (48, 48)


def test_cell_stats_spacing_scales_areas_and_density(disk_sets):
    from skimage.measure import regionprops

    labels = segment_nuclei(disk_sets[0][1])
    px, um = cell_stats(labels), cell_stats(labels, spacing=(0.5, 0.5))
    assert px["density_unit"] == "per 1e6 px^2" and um["density_unit"] == "per mm^2"
    assert px["area_px"] == um["area_px"] == 256 * 256
    np.testing.assert_allclose(um["areas"], 0.25 * px["areas"])
    assert um["mean_area"] == pytest.approx(0.25 * px["mean_area"])
    assert px["density"] == pytest.approx(17 / 256**2 * 1e6)
    # 17 objects in 256^2 * 0.25 um^2 = 0.016384 mm^2
    assert um["density"] == pytest.approx(17 / (256**2 * 0.25e-6))
    assert cell_stats(labels, spacing=0.5, unit="mm")["density"] == pytest.approx(17 / (256**2 * 0.25))
    # shape measures agree with scikit-image's own in 2D, and isotropic spacing leaves them unchanged
    ref = regionprops(labels)
    np.testing.assert_allclose(px["eccentricity"], [p.eccentricity for p in ref], atol=1e-9)
    np.testing.assert_allclose(px["solidity"], [p.solidity for p in ref])
    np.testing.assert_allclose(um["eccentricity"], px["eccentricity"], atol=1e-9)


def test_compare_cells(disk_sets):
    real = [cell_stats(segment_nuclei(img)) for _, img, _ in disk_sets]
    same = compare_cells(real, real)
    assert same["paired"]
    for k in ("count", "density", "mean_area"):
        assert same[f"{k}_rel_err_median"] == 0 and same[f"{k}_rel_err_mean"] == 0
    for k in ("area", "eccentricity", "solidity"):
        assert same[f"{k}_wasserstein"] == 0 and same[f"{k}_ks"] == 0

    fake = [cell_stats(segment_nuclei(render(d, scale=1.2, seed=10 + i)[0])) for i, (d, _, _) in enumerate(disk_sets)]
    cmp = compare_cells(real, fake)
    assert cmp["mean_area_rel_err_median"] == pytest.approx(0.44, abs=0.1)
    assert cmp["set_mean_area_rel_err"] == pytest.approx(0.44, abs=0.1)
    assert cmp["count_rel_err_mean"] == 0 and cmp["density_rel_err_median"] == 0
    assert cmp["area_ks"] > 0.3 and cmp["area_wasserstein"] > 20  # px^2; disks are ~80-250 px^2
    assert cmp["solidity_ks"] < cmp["area_ks"]  # size changed, shape did not

    unpaired = compare_cells(real, fake[:2])
    assert not unpaired["paired"] and (unpaired["n_real"], unpaired["n_fake"]) == (3, 2)
    assert "count_rel_err_median" not in unpaired and "mean_area_rel_err" not in unpaired
    assert unpaired["set_mean_area_rel_err"] == pytest.approx(0.44, abs=0.1)
    assert unpaired["set_density_rel_err"] == 0
    assert unpaired["area_ks"] > 0.3


@pytest.mark.parametrize("bad", [np.zeros(16), np.zeros((0, 0)), np.zeros((3, 0, 8)), np.zeros((2, 2, 8, 8)),
                                 np.full((8, 8), np.nan), np.array([["a"]])])
def test_segment_bad_image(bad):
    with pytest.raises(NeurodiffError, match="^image: "):
        segment_nuclei(bad)


@pytest.mark.parametrize("call, arg", [
    (lambda: segment_nuclei(np.zeros((8, 8)), min_area=-1), "min_area"),
    (lambda: segment_nuclei(np.zeros((8, 8)), min_distance=0), "min_distance"),
    (lambda: segment_nuclei(np.zeros((8, 8)), smooth_sigma=-1.0), "smooth_sigma"),
    (lambda: segment_nuclei(np.zeros((8, 8)), dims=4), "dims"),
    (lambda: cell_stats(np.zeros(8, np.int32)), "labels"),
    (lambda: cell_stats(np.zeros((0, 4), np.int32)), "labels"),
    (lambda: cell_stats(np.zeros((8, 8))), "labels"),
    (lambda: cell_stats(-np.ones((8, 8), np.int32)), "labels"),
    (lambda: cell_stats(np.zeros((8, 8), np.int32), spacing=(1.0, -1.0)), "spacing"),
    (lambda: cell_stats(np.zeros((8, 8), np.int32), spacing=(1.0, 1.0, 1.0)), "spacing"),
    (lambda: cell_stats(np.zeros((8, 8), np.int32), spacing=1.0, unit="furlong"), "unit"),
    (lambda: compare_cells([], []), "real"),
    (lambda: compare_cells([{"count": 1}], [{"count": 1}]), r"real\[0\]"),
    (lambda: compare_cells([cell_stats(np.ones((4, 4), np.int32))],
                           [cell_stats(np.ones((4, 4), np.int32), spacing=1.0)]), "real/fake"),
])
def test_bad_arguments_name_the_argument(call, arg):
    with pytest.raises(NeurodiffError, match=f"^{arg}: ") as e:
        call()
    assert "\n" not in str(e.value)


def test_import_does_not_pull_torch_or_skimage():
    code = "import sys, neurodiff.metrics.cells; print('torch' in sys.modules, 'skimage' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "False"]
