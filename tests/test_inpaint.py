"""RePaint: the jump schedule, harmonisation against an exact denoiser, tiles, exact known pixels, the CLI."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from neurodiff import config
from neurodiff.cli import main
from neurodiff.data import io
from neurodiff.diffusion.denoiser import EDM
from neurodiff.errors import NeurodiffError
from neurodiff.diffusion.schedules import karras
from neurodiff.tasks.inpaint import inpaint_array, jump_schedule, network_calls, repaint
from neurodiff.tasks.masks import RegionMask, parse_boxes

S = 0.5     # data: every pixel of an image equals one value v ~ N(0, S^2)


def flat_denoiser(x, sigma):
    """The exact D(x, sigma) for images that are one constant v ~ N(0, S^2): the posterior mean of v everywhere."""
    n = x[0].numel()
    sig = sigma.view(-1, *[1] * (x.ndim - 1)).to(x.dtype)
    v = S ** 2 * x.sum(dim=tuple(range(1, x.ndim)), keepdim=True) / (n * S ** 2 + sig ** 2)
    return v.expand_as(x)


def local_denoiser(x, sigma):
    """The exact D(x, sigma) for pixels drawn independently from N(0.2, 0.3^2): local, as real networks are."""
    s2 = sigma.view(-1, *[1] * (x.ndim - 1)).to(x.dtype) ** 2
    return (0.09 * x + s2 * 0.2) / (0.09 + s2)


class FlatNet(torch.nn.Module):
    """A "network" that, behind EDM preconditioning, gives exactly ``flat_denoiser`` (or ``denoiser``)."""

    def __init__(self, denoiser=flat_denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x_in, c_noise, cond=None):
        sigma = (4 * c_noise.double()).exp()
        c_skip, c_out, c_in, _ = EDM(0.5).scalings(sigma)
        view = (-1, *[1] * (x_in.ndim - 1))
        x = x_in.double() / c_in.view(view)
        return ((self.denoiser(x, sigma) - c_skip.view(view) * x) / c_out.view(view)).float()


def flat_model(dims: int, tile_shape: list[int], denoiser=flat_denoiser):
    cfg = config.load("tiny" if dims == 2 else "tiny3d")
    cfg.model.in_channels = 1
    cfg.data.meta = {"normalizer": {"kind": "minmax", "lo": 0.0, "hi": 255.0}, "shape": [1, *tile_shape]}
    return SimpleNamespace(net=FlatNet(denoiser), cfg=cfg)


def test_jump_schedule_walks_down_with_jumps_and_costs_the_classic_2410_calls():
    seq = jump_schedule(250, 10, 10)
    assert seq[0] == 0 and seq[-1] == 250
    assert all(abs(b - a) == 1 for a, b in zip(seq, seq[1:]))
    assert network_calls(seq) == 2410                       # 250 + 24 jump points x 9 x 10
    assert jump_schedule(20, 5, 1) == list(range(21))
    assert network_calls(jump_schedule(20, 5, 3)) == 20 + 3 * 2 * 5
    with pytest.raises(Exception, match="jump"):
        jump_schedule(20, 0, 3)


def test_jump_until_keeps_the_jumps_to_the_noisiest_part_of_the_schedule():
    seq = jump_schedule(20, 5, 3, until=0.5)                 # jump points at 15 and 10 steps left, not at 5
    tops = [a for a, b in zip(seq, seq[1:]) if b < a]        # where the walk turns back up
    assert tops and max(tops) == 10
    assert network_calls(seq) == 20 + 2 * 2 * 5
    assert jump_schedule(20, 5, 3, until=1.0) == jump_schedule(20, 5, 3)
    assert jump_schedule(20, 5, 3, until=0) == list(range(21))
    assert network_calls(jump_schedule(250, 10, 10, until=0.5)) == 250 + 12 * 9 * 10
    with pytest.raises(NeurodiffError, match="--jump-until"):
        jump_schedule(20, 5, 3, until=1.5)


@pytest.mark.parametrize("eta,order", [(0.0, 1), (1.0, 1), (0.0, 2)])
def test_repaint_with_an_exact_denoiser_keeps_the_data_distribution_under_jumps(eta, order):
    """All masked: RePaint samples the prior. With the exact denoiser neither the ancestral (eta 1) nor the
    deterministic (eta 0) steps down drift, however often the jumps re-noise: v keeps mean 0 and std S (with
    enough steps: at 20 both lose some 10-20 % of the std, the discretisation's error)."""
    n = 400
    known = torch.zeros(n, 1, 4, 4, dtype=torch.float64)
    mask = torch.ones_like(known, dtype=torch.bool)
    sigmas = torch.cat([karras(250, 0.002, 80.0), torch.zeros(1, dtype=torch.float64)])   # fine enough steps
    gens = [torch.Generator().manual_seed(k) for k in range(n)]
    y = repaint(flat_denoiser, known, mask, sigmas, jump_schedule(250, 25, 5), gens, eta=eta, order=order)
    v = y.mean(dim=(1, 2, 3))
    assert (y - v.view(-1, 1, 1, 1)).abs().max() < 1e-3     # every sample is one flat value, as the data are
    assert abs(v.mean().item()) < 3 * S / n ** 0.5
    assert abs(v.std().item() / S - 1) < 0.12, v.std().item()
    with pytest.raises(NeurodiffError, match="--eta"):
        repaint(flat_denoiser, known, mask, sigmas, [0, 1], gens, eta=1.5)
    with pytest.raises(NeurodiffError, match="order 2: expected 1, or 2 with eta 0"):
        repaint(flat_denoiser, known, mask, sigmas, [0, 1], gens, eta=1.0, order=2)


def test_order_2_without_jumps_is_the_dpmpp_2m_sampler():
    """Whole image masked, no jumps: order 2 walks down exactly as DPM-Solver++(2M) from the same noise."""
    from neurodiff.diffusion.samplers import dpmpp_2m
    sig = torch.tensor([80.0, 20, 5, 1.5, 0.4, 0.1, 0], dtype=torch.float64)
    mu = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def D(x, s):                                          # exact denoiser of N(mu, 0.25)
        s = s.view(-1, 1, 1, 1).double()
        return mu + 0.25 / (0.25 + s ** 2) * (x.double() - mu)
    noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3)).double()
    want = dpmpp_2m(D, noise, sig)
    got = repaint(D, torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8, dtype=torch.bool), sig, jump_schedule(6, 1, 1),
                  [torch.Generator().manual_seed(3)], eta=0, order=2)
    assert (want - got).abs().max() < 1e-5
    first = repaint(D, torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8, dtype=torch.bool), sig,
                    jump_schedule(6, 1, 1), [torch.Generator().manual_seed(3)], eta=0, order=1)
    assert (first - got).abs().max() > 1e-3                # order 1 is a different (Euler/DDIM) path


@pytest.mark.parametrize("resample,eta", [(1, 1.0), (5, 1.0), (5, 0.0)])
def test_repaint_fills_the_mask_in_agreement_with_the_known_pixels(resample, eta):
    """Known half = c: the exact posterior says the other half is c too; plain replacement gets most of the way,
    jumps (resampling) get closer."""
    c = 0.6
    known = torch.full((4, 1, 8, 8), c, dtype=torch.float64)
    mask = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    mask[..., 4:] = True
    sigmas = torch.cat([karras(30, 0.002, 80.0), torch.zeros(1, dtype=torch.float64)])
    gens = [torch.Generator().manual_seed(k) for k in range(4)]
    y = repaint(flat_denoiser, known, mask, sigmas, jump_schedule(30, 3, resample), gens, eta=eta)
    assert torch.equal(y[~mask.expand_as(y)], known.float()[~mask.expand_as(y)])   # known pixels untouched
    err = (y[mask.expand_as(y)] - c).abs().max().item()
    assert err < (0.35 if resample == 1 else 0.1), err


def test_a_soft_mask_releases_a_pixel_the_later_the_smaller_its_value():
    """Float masks (a feathered tile's band): 1 is True exactly; a pixel of value w is held at its known value
    (noised) until the last w of the schedule, so the fill only refines it: the smaller w, the closer it stays."""
    def local(x, sigma):            # the exact denoiser of pixels drawn independently from N(0.6, 0.1^2)
        s2 = sigma.view(-1, *[1] * (x.ndim - 1)).to(x.dtype) ** 2
        return (0.01 * x + s2 * 0.6) / (0.01 + s2)

    known = torch.full((4, 1, 8, 16), 0.6, dtype=torch.float64)
    known[..., 8:] = -0.6                                   # a neighbour's fill, to be refilled softly
    soft = torch.zeros(4, 1, 8, 16, dtype=torch.float64)
    soft[..., 8:] = 1 - torch.arange(8, 0, -1) / 9.0        # 1/9 at column 8 ... 8/9 at column 15
    sigmas = torch.cat([karras(30, 0.002, 80.0), torch.zeros(1, dtype=torch.float64)])
    run = lambda m: repaint(local, known, m, sigmas, jump_schedule(30, 3, 3),  # noqa: E731
                            [torch.Generator().manual_seed(k) for k in range(4)], eta=0.0)
    assert torch.equal(run(soft > 0), run((soft > 0).double()))     # 1.0 is True, bit for bit
    y = run(soft)
    assert torch.equal(y[..., :8], known[..., :8].float())          # 0.0 is known
    moved = (y[..., 8:] + 0.6).abs().mean(dim=(0, 1, 2))            # per column, from the neighbour's value
    assert moved[0] < 0.05 < moved[1] < 1.0 < moved[2:].min(), moved      # kept, refined, redrawn
    with pytest.raises(NeurodiffError, match="soft mask"):
        run(soft * 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_tiled_inpainting_is_seamless_and_only_samples_tiles_touching_the_mask(dims, capsys):
    spatial = (48, 40) if dims == 2 else (24, 20, 20)
    image = np.full((1, *spatial), 150, dtype=np.uint8)
    image[(0, *[slice(0, 2)] * dims)] = 7                  # a few odd known pixels far from the mask
    mask = np.zeros(spatial, dtype=bool)
    mask[(slice(10, 30), *[slice(4, 16)] * (dims - 1))] = True
    model = flat_model(dims, [8] * dims)
    # feather=0: the flat model's denoiser is global (the mean of the whole tile), so a tile whose neighbours' fills
    # are released (feathered) loses its hold on them; real networks are local (test_a_soft_mask_releases_...)
    kw = dict(steps=12, jump=3, resample=2, tile=8, overlap=4, seed=1, feather=0)
    out, info = inpaint_array(model, image, mask, **kw)
    assert out.dtype == np.uint8 and np.array_equal(out[:, ~mask], image[:, ~mask])
    assert 0 < info["tiles"] < info["tiles_total"] and (info["tile_px"], info["overlap_px"]) == (8, 4)
    from neurodiff.tiling import regions       # tiles inside the hole see nothing of the image: counted, not hidden
    assert info["tiles_blind"] == sum(bool(mask[r].all()) for r in regions(list(spatial), 8, 4)) > 0
    filled = out[:, mask].astype(float)
    assert np.abs(filled - 150).max() <= 12                # continues the flat image across tiles: no seams
    again, _ = inpaint_array(model, image, mask, progress=True, **kw)
    assert np.array_equal(out, again)                       # seeded
    assert f"note: {info['tiles_blind']} of the {info['tiles']} tiles to sample lie wholly in the mask" in \
        capsys.readouterr().err                             # said before any work
    soft, _ = inpaint_array(model, image, mask, **kw | {"feather": 2})
    assert np.array_equal(soft[:, ~mask], image[:, ~mask]) and not np.array_equal(soft, out)


def _largest_square(m: np.ndarray) -> int:
    """By brute force: the largest t for which some plane of ``m`` holds a box of fill of min(t, H) x min(t, W) (a
    tile larger than an axis is cut to it), so that a tile of t px could lie wholly in the mask."""
    planes, (h, w), t = m.reshape(-1, *m.shape[-2:]), m.shape[-2:], 0
    while t < max(h, w) and any(p[y:y + min(t + 1, h), x:x + min(t + 1, w)].all() for p in planes
                                for y in range(h - min(t + 1, h) + 1) for x in range(w - min(t + 1, w) + 1)):
        t += 1
    return t


def test_largest_square_of_a_mask_and_the_auto_tile_that_no_tile_lies_wholly_in(capsys):
    from neurodiff.tasks.masks import auto_tile, square_side
    from neurodiff.tiling import regions

    rng = np.random.default_rng(3)
    for shape in [(9, 13), (13, 9), (1, 7), (3, 8, 6), (4, 11)]:
        for _ in range(40):
            m = rng.random(shape) < rng.uniform(0.5, 0.95)
            m[..., rng.integers(0, shape[-1]):rng.integers(0, shape[-1] + 1)] |= rng.random() < 0.3   # strips
            assert square_side(m) == _largest_square(m), m.astype(int)
    assert square_side(np.zeros((5, 5), bool)) == 0 and square_side(np.ones((5, 5), bool)) == 5
    strip = np.zeros((4, 20), bool)
    strip[:, 3:13] = True           # a 4-px square, but tiles above 4 px are cut to 4 rows: 10 columns of fill count
    assert square_side(strip) == square_side(strip.T) == 10 and square_side(np.ones((4, 6), bool)) == 6
    # the least multiple of the factor above the square, at least the training size, at most 4x it (2D) or 2x (3D)
    assert [auto_tile(64, 4, s, 2) for s in (0, 63, 64, 160, 255, 256, 5000)] == [64, 64, 68, 164, 256, 256, 256]
    assert [auto_tile(32, 8, s, 3) for s in (10, 40, 63, 500)] == [32, 48, 64, 64]
    spatial = (48, 40)
    image = np.full((1, *spatial), 150, dtype=np.uint8)
    mask = np.zeros(spatial, dtype=bool)
    mask[10:30, 4:30] = True                                # a 20 x 26 hole in an image of 8^2 tiles
    model = flat_model(2, [8, 8])
    kw = dict(steps=4, jump=2, resample=2, seed=1, feather=0)
    _, info = inpaint_array(model, image, mask, **kw)
    assert info["tile_px"] == 8 and info["tiles_blind"] > 0
    out, info = inpaint_array(model, image, mask, tile="auto", progress=True, **kw)
    assert info["tile_px"] == auto_tile(8, 2, 20, 2) == 22 and info["tiles_blind"] == 0
    assert sum(bool(mask[r].all()) for r in regions(list(spatial), 22, info["overlap_px"])) == 0
    assert np.array_equal(out[:, ~mask], image[:, ~mask]) and "note:" not in capsys.readouterr().err
    with pytest.raises(NeurodiffError, match="--tile big: expected 0 .the whole image., auto or"):
        inpaint_array(model, image, mask, tile="big", **kw)
    assert inpaint_array(model, image, mask, tile=np.int64(8), **kw)[1]["tile_px"] == 8      # numpy integers too
    thin, cut = np.full((1, 6, 60), 150, np.uint8), np.zeros((6, 60), bool)
    cut[:, 10:40] = True             # a band across an image thinner than a tile: tiles are cut to its 6 rows
    assert inpaint_array(model, thin, cut, **kw)[1]["tiles_blind"] > 0
    _, info = inpaint_array(model, thin, cut, tile="auto", **kw)
    assert info["tile_px"] == 32 and info["tiles_blind"] == 0      # not 8, as the band's 6-px square would give


def test_boxes_and_bad_masks_have_clear_errors():
    m = parse_boxes(["2:4,1:3"], (6, 5))
    assert m.sum() == 4 and m[2:4, 1:3].all()
    with pytest.raises(Exception, match="--box"):
        parse_boxes(["2:9,1:3"], (6, 5))
    with pytest.raises(Exception, match="--box"):
        parse_boxes(["2:4"], (6, 5))
    model = flat_model(2, [8, 8])
    with pytest.raises(Exception, match="mask shape"):
        inpaint_array(model, np.zeros((1, 16, 16), np.uint8), np.zeros((16, 8), bool))
    with pytest.raises(Exception, match="channel"):
        inpaint_array(model, np.zeros((3, 16, 16), np.uint8), np.zeros((16, 16), bool))
    with pytest.raises(Exception, match="NaN"):
        inpaint_array(model, np.full((1, 16, 16), np.nan, np.float32), np.zeros((16, 16), bool))
    with pytest.raises(Exception, match="the image is boolean"):
        inpaint_array(model, np.zeros((1, 16, 16), bool), np.ones((16, 16), bool))


@pytest.fixture(scope="module")
def tiny_run(slice_folder, tmp_path_factory):
    run = tmp_path_factory.mktemp("inpaint") / "run"
    assert main(["train", "tiny", "--data", str(slice_folder), "--out", str(run), "--no-progress",
                 "--set", "train.total_nimg=16", "--set", "train.batch=8"]) == 0
    return run


@pytest.mark.parametrize("suffix,dtype", [(".tif", np.uint16), (".png", np.uint8), (".zarr", np.uint16)])
def test_cli_keeps_known_pixels_bit_identical_in_the_written_file(tiny_run, tmp_path, mni, suffix, dtype, capsys):
    img = mni[10:190, 20:140, 90].astype(dtype) * (200 if dtype == np.uint16 else 1)   # 180 x 120, tiles of 32
    src = tmp_path / f"section{suffix}"
    spaced = suffix != ".png"
    io.write(src, img[None], io.ImageMeta(format=io.format_of(src), dtype=np.dtype(dtype).name,
                                          spacing=(0.5, 0.5) if spaced else None, unit="um" if spaced else None))
    mask = np.zeros(img.shape, np.uint8)
    mask[40:70, 30:100] = 255                            # a tear
    io.write(tmp_path / "mask.png", mask[None])
    out = tmp_path / f"repaired{suffix}"
    assert main(["inpaint", str(tiny_run), "--image", str(src), "--mask", str(tmp_path / "mask.png"),
                 "--box", "150:160,10:20", "--out", str(out), "--steps", "6", "--jump", "2", "--resample", "2",
                 "--no-progress"]) == 0
    assert "network calls each" in capsys.readouterr().out
    y, meta = io.read(out)
    filled = mask.astype(bool)
    filled[150:160, 10:20] = True
    assert y.dtype == dtype and y.shape == (1, *img.shape)
    assert np.array_equal(y[0][~filled], img[~filled])
    assert not np.array_equal(y[0][filled], img[filled])
    if spaced:
        assert meta.spacing == pytest.approx((0.5, 0.5)) and meta.unit == "um"
    if suffix == ".zarr":   # zarr in and out goes tile by tile (lazy); the same pixels as in memory
        assert main(["inpaint", str(tiny_run), "--image", str(src), "--mask", str(tmp_path / "mask.png"),
                     "--box", "150:160,10:20", "--out", str(tmp_path / "mem.tif"), "--steps", "6", "--jump", "2",
                     "--resample", "2", "--no-progress"]) == 0
        assert np.array_equal(io.read(tmp_path / "mem.tif")[0], y)
        assert not list(tmp_path.glob(".*tmp*"))
    assert main(["inpaint", str(tiny_run), "--image", str(src), "--mask", str(tmp_path / "mask.png"),
                 "--box", "1:2,1:2", "--out", str(tmp_path / "x.tif"), "--tile", "31", "--steps", "2"]) == 2
    assert "multiple of" in capsys.readouterr().err
    assert main(["inpaint", str(tiny_run), "--image", str(src), "--out", str(tmp_path / "x.tif")]) == 2
    io.write(tmp_path / "small.png", mask[None, :50])
    assert main(["inpaint", str(tiny_run), "--image", str(src), "--mask", str(tmp_path / "small.png"),
                 "--out", str(tmp_path / "x.tif")]) == 2
    assert "does not match" in capsys.readouterr().err
    assert main(["inpaint", str(tiny_run), "--image", str(src), "--box", "1:2,1:2", "--out", str(tmp_path / "x.svs")]) == 2
    assert "x.svs: SVS (Aperio) is read only" in capsys.readouterr().err


@pytest.mark.parametrize("image_suffix,out_suffix", [(".zarr", ".zarr"), (".tif", ".zarr"), (".tif", ".tif")])
def test_a_stopped_inpaint_resumes_to_the_uninterrupted_result(tiny_run, tmp_path, mni, monkeypatch, capsys,
                                                              image_suffix, out_suffix):
    """A .zarr or .tif --out is written tile by tile into a hidden folder beside it, with a record of the tiles written:
    a stopped run keeps them, a rerun refuses to discard them, --resume with other settings is refused, and
    --resume samples only the remaining tiles and gives the uninterrupted run's pixels, also when the mask is given
    as its overview (the same pixels to fill) instead."""
    import json

    import neurodiff.tasks.inpaint as inpaint_mod

    img = mni[10:190, 20:140, 90].astype(np.uint16) * 200          # 180 x 120, tiles of 32
    src = tmp_path / f"section{image_suffix}"
    io.write(src, img[None], io.ImageMeta(format=io.format_of(src), dtype="uint16"))
    mask = np.zeros(img.shape, np.uint8)
    mask[40:70, 30:100] = 255
    io.write(tmp_path / "mask.png", mask[None])
    io.write(tmp_path / "half.png", mask[None, ::2, ::2])           # an overview of the same mask (factor 2)
    moved = np.roll(mask, 1, axis=0)
    io.write(tmp_path / "moved.png", moved[None])
    args = lambda out, *more, m="mask": ["inpaint", str(tiny_run), "--image", str(src), "--mask",  # noqa: E731
                                         str(tmp_path / f"{m}.png"), "--out", str(out), "--steps", "4", "--jump",
                                         "2", "--resample", "2", "--no-progress", *more]
    real, calls = inpaint_mod.repaint, []

    def counted(*a, **kw):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(inpaint_mod, "repaint", counted)
    stop_at = None
    assert main(args(tmp_path / f"whole{out_suffix}")) == 0
    n_tiles = len(calls)
    assert n_tiles >= 4
    whole = io.read(tmp_path / f"whole{out_suffix}")[0]
    out = tmp_path / f"cut{out_suffix}"
    part, record = tmp_path / f".cut{out_suffix}.partial", tmp_path / f".cut{out_suffix}.partial.json"
    calls.clear()
    stop_at = 3                       # stopped while sampling the third tile
    assert main(args(out)) == 130 and "interrupted" in capsys.readouterr().err     # Ctrl-C
    assert part.is_dir() and not out.exists() and json.loads(record.read_text())["tiles_done"] == 2
    stop_at = None
    assert main(args(out)) == 2 and "add --resume" in capsys.readouterr().err
    assert main(args(out, "--resume", "--seed", "1")) == 2 and "seed=0, not 1" in capsys.readouterr().err
    assert main(args(tmp_path / "x.png", "--resume")) == 2 and "needs a .zarr or .tif --out" in capsys.readouterr().err
    assert main(args(out, "--resume", m="moved")) == 2 and "had mask_sha1=" in capsys.readouterr().err
    calls.clear()       # the mask's overview marks the same pixels, the default tile spelled out: the same run
    assert main(args(out, "--resume", "--tile", "32", "--overlap", "8", m="half")) == 0
    assert "(2 written by the stopped run)" in capsys.readouterr().out
    assert len(calls) == n_tiles - 2                  # only the tiles the stopped run had not written
    assert np.array_equal(io.read(out)[0], whole)
    assert not part.exists() and not record.exists()
    assert main(args(out, "--resume")) == 2 and "no stopped run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_tile_auto_holds_the_hole_and_a_stopped_run_resumes_with_the_tile_it_chose(tiny_run, tmp_path, mni,
                                                                                    monkeypatch, capsys):
    import json

    import neurodiff.tasks.inpaint as inpaint_mod

    src = tmp_path / "section.tif"
    io.write(src, (mni[10:190, 20:140, 90].astype(np.uint16) * 200)[None], io.ImageMeta(format="tiff", dtype="uint16"))
    args = lambda out, *more: ["inpaint", str(tiny_run), "--image", str(src), "--box", "40:80,30:100", "--out",  # noqa: E731
                               str(out), "--steps", "4", "--jump", "2", "--resample", "2", "--no-progress", *more]
    assert main(args(tmp_path / "default.tif")) == 0          # 32^2 tiles: some lie wholly in the 40 x 70 hole
    assert "wholly in the mask" in capsys.readouterr().out
    real, calls, stop = inpaint_mod.repaint, [], [None]

    def counted(*a, **kw):
        calls.append(1)
        if len(calls) == stop[0]:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(inpaint_mod, "repaint", counted)
    assert main(args(tmp_path / "whole.zarr", "--tile", "auto")) == 0
    said, n_tiles = capsys.readouterr().out, len(calls)
    assert "--tile auto: 42 px; a tile of 40 px could lie wholly in the mask" in said and "wholly in the mask)" not in said
    out, stop[0] = tmp_path / "cut.zarr", 2
    calls.clear()
    assert main(args(out, "--tile", "auto")) == 130
    assert json.loads((tmp_path / ".cut.zarr.partial.json").read_text())["settings"]["tile"] == 42
    calls.clear()
    stop[0] = None
    assert main(args(out, "--tile", "auto", "--resume")) == 0     # the mask scanned again: the same tile
    assert n_tiles >= 2 and len(calls) == n_tiles - 1
    assert np.array_equal(io.read(out)[0], io.read(tmp_path / "whole.zarr")[0])


def test_bad_settings_and_outputs_are_refused_before_any_work(tiny_run, tmp_path, mni, monkeypatch, capsys):
    """Settings the run cannot use, an output format that cannot hold the image, an image the model cannot take:
    one line naming the option or file, before the image is copied or a tile sampled, and nothing left behind."""
    import neurodiff.tasks.inpaint as inpaint_mod
    from neurodiff.data import zarrio

    def no_work(*a, **kw):
        raise AssertionError("work started")

    monkeypatch.setattr(inpaint_mod, "repaint", no_work)
    monkeypatch.setattr(zarrio, "copy_regions", no_work)
    io.write(tmp_path / "grey.tif", mni[10:190, 20:140, 90].astype(np.float32)[None])
    io.write(tmp_path / "rgb.tif", np.zeros((3, 64, 64), np.uint8))
    for image, out, more, error in [
            ("grey", "x.png", [], "x.png: PNG holds uint8 or uint16, got float32"),
            ("grey", "x.tif", ["--tile", "31"], "--tile 31: expected 0 (the whole image), auto or a positive multiple"),
            ("grey", "x.tif", ["--tile", "-32"], "--tile -32: expected 0 (the whole image), auto or a positive "),
            ("grey", "x.tif", ["--tile", "32", "--overlap", "32"], "--overlap 32: expected 0 <= overlap < tile"),
            ("grey", "x.zarr", ["--steps", "-3"], "--steps: expected an integer >= 1, got -3"),
            ("grey", "x.tif", ["--eta", "5"], "--eta: expected a number in [0, 1], got 5"),
            ("rgb", "x.tif", [], "rgb.tif: the image has 3 channel(s), the model takes 1")]:
        assert main(["inpaint", str(tiny_run), "--image", str(tmp_path / f"{image}.tif"), "--box",
                     "1:9,1:9", "--out", str(tmp_path / out), "--no-progress", *more]) == 2
        err = capsys.readouterr().err
        assert error in err and len(err.strip().splitlines()) == 1, (more, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.tif", "rgb.tif"]
    with pytest.raises(SystemExit):           # argparse: the usage, then the one line
        main(["inpaint", str(tiny_run), "--image", str(tmp_path / "grey.tif"), "--box", "1:9,1:9", "--out",
              str(tmp_path / "x.tif"), "--tile", "big"])
    assert "argument --tile: expected an integer or auto, got 'big'" in capsys.readouterr().err


def test_tiff_image_and_mask_are_read_and_the_tiff_written_by_region(tiny_run, tmp_path, mni, monkeypatch, capsys):
    """A TIFF section and a TIFF mask are never read whole (sections larger than memory): tiles are read, the
    output is streamed into a TIFF band by band; the pixels are those of the in-memory path (a .npy output),
    the spacing is kept, and the file is an ImageJ TIFF (Fiji)."""
    import tifffile

    img = mni[10:190, 20:140, 90].astype(np.uint8)
    meta = io.ImageMeta(format="tiff", dtype="uint8", spacing=(0.5, 0.5), unit="um")
    io.write(tmp_path / "section.tif", img[None], meta)
    mask = np.zeros(img.shape, np.uint8)
    mask[40:70, 30:100] = 1
    io.write(tmp_path / "mask.tif", mask[None])
    args = lambda out: ["inpaint", str(tiny_run), "--image", str(tmp_path / "section.tif"), "--mask",  # noqa: E731
                        str(tmp_path / "mask.tif"), "--box", "150:160,10:20", "--out", str(out), "--steps", "4",
                        "--jump", "2", "--resample", "2", "--no-progress"]
    assert main(args(tmp_path / "memory.npy")) == 0               # whole arrays in memory
    real_read = io.read

    def read(path, *a, **kw):
        assert Path(path).suffix != ".tif", f"{path} read whole"
        return real_read(path, *a, **kw)

    monkeypatch.setattr(io, "read", read)
    assert main(args(tmp_path / "repaired.tif")) == 0
    monkeypatch.setattr(io, "read", real_read)
    y, ymeta = io.read(tmp_path / "repaired.tif")
    assert np.array_equal(y, io.read(tmp_path / "memory.npy")[0])
    filled = mask.astype(bool)
    filled[150:160, 10:20] = True
    assert np.array_equal(y[0][~filled], img[~filled]) and not np.array_equal(y[0][filled], img[filled])
    assert ymeta.spacing == pytest.approx((0.5, 0.5)) and ymeta.unit == "um"
    with tifffile.TiffFile(tmp_path / "repaired.tif") as t:
        assert t.is_imagej
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "memory.npy", "repaired.tif", "section.tif"]


def test_a_mask_drawn_on_an_overview_is_scaled_up_region_by_region(tiny_run, tmp_path, mni, monkeypatch, capsys):
    """A mask at a third of the image's size (a thumbnail's, as slide viewers export) fills what its nearest-
    neighbour upscaling marks: the same file as with the full-size mask, from a PNG (in memory) and from a TIFF
    (read region by region, never whole); the mapping is Pillow's; a mask of another aspect is refused."""
    from PIL import Image

    from neurodiff.tasks.inpaint_cli import OverviewMask, overview_factor, read_mask

    img = mni[10:190, 20:140, 90].astype(np.uint8)                 # 180 x 120
    io.write(tmp_path / "section.tif", img[None], io.ImageMeta(format="tiff", dtype="uint8"))
    small = np.zeros((60, 40), np.uint8)
    small[12:25, 8:31] = 255
    small[40:44, 3:6] = 7
    io.write(tmp_path / "thumb.png", small[None])
    io.write(tmp_path / "thumb.tif", small[None])
    io.write(tmp_path / "full.png", np.kron(small, np.ones((3, 3), np.uint8))[None])
    args = lambda mask, out: ["inpaint", str(tiny_run), "--image", str(tmp_path / "section.tif"),  # noqa: E731
                              "--mask", str(tmp_path / mask), "--out", str(tmp_path / out), "--steps", "3",
                              "--jump", "1", "--resample", "1", "--no-progress"]
    assert main(args("full.png", "full.npy")) == 0
    assert main(args("thumb.png", "thumb.npy")) == 0
    assert "scaled up 3x to the image's 180x120" in capsys.readouterr().out
    real_read = io.read

    def read(path, *a, **kw):
        assert Path(path).suffix != ".tif", f"{path} read whole"
        return real_read(path, *a, **kw)

    monkeypatch.setattr(io, "read", read)
    assert main(args("thumb.tif", "lazy.tif")) == 0
    monkeypatch.setattr(io, "read", real_read)
    full = io.read(tmp_path / "full.npy")[0]
    assert not np.array_equal(full, img[None])
    assert np.array_equal(io.read(tmp_path / "thumb.npy")[0], full)
    assert np.array_equal(io.read(tmp_path / "lazy.tif")[0], full)
    # a factor that is not whole (a thumbnail's size rounded): Pillow's nearest neighbour, any region alike
    assert overview_factor((60, 40), (179, 121)) == pytest.approx(179 / 60)
    up = OverviewMask(small[None], (179, 121))
    whole = up[(slice(None), slice(0, 179), slice(0, 121))]
    assert np.array_equal(whole[0], np.asarray(Image.fromarray(small).resize((121, 179), Image.NEAREST)))
    assert np.array_equal(up[(slice(None), slice(50, 97), slice(13, 121))], whole[:, 50:97, 13:121])
    assert up[(slice(None), slice(5, 5), slice(0, 3))].shape == (1, 0, 3)
    assert overview_factor((60, 60), (180, 120)) is None and overview_factor((200, 130), (180, 120)) is None
    assert overview_factor((60, 120), (180, 120)) is None            # in 2D both axes are scaled
    for short in [(179, 120), (180, 119), (179, 119), (150, 100)]:     # a crop, or a factor under 1.5
        assert overview_factor(short, (180, 120)) is None
    # a stack whose slices were each drawn small (14 x 256 x 256 for 14 x 2048 x 2048): the slices are kept
    assert overview_factor((14, 256, 256), (14, 2048, 2048)) == 8 and overview_factor((5, 8, 8), (14, 64, 64)) is None
    stack = np.zeros((1, 3, 4, 5), np.uint8)
    stack[0, 1, 1:3, 2:4] = 1
    np.save(tmp_path / "stack.npy", stack)
    vol = read_mask(tmp_path / "stack.npy", [], (3, 8, 10), lazy=False)
    assert np.array_equal(vol[(slice(0, 3), slice(0, 8), slice(0, 10))], np.kron(stack[0], np.ones((1, 2, 2))) > 0)
    io.write(tmp_path / "other.png", np.ones((1, 60, 60), np.uint8))
    assert main(args("other.png", "x.npy")) == 2
    err = capsys.readouterr().err
    assert "other.png: mask shape [60, 60] does not match the image's [180, 120], nor is it the image scaled" in err
    import tifffile                                   # a refused lazy TIFF mask does not keep its file open

    from neurodiff.data import tiffio
    tifffile.imwrite(tmp_path / "other.tif", np.ones((64, 64), np.uint8), tile=(16, 16), compression="zlib")
    closed, real_close = [], tiffio._View.close
    monkeypatch.setattr(tiffio._View, "close", lambda self: closed.append(1) or real_close(self))
    with pytest.raises(NeurodiffError, match="does not match"):
        read_mask(tmp_path / "other.tif", [], (180, 120), lazy=True)
    assert closed == [1]


def test_random_masks_cover_their_bin():
    from neurodiff.metrics.inpainting import BINS, random_mask

    for k, (lo, hi) in enumerate(BINS):
        fractions = [random_mask((96, 80), lo, hi, seed=k * 10 + s).mean() for s in range(5)]
        assert all(lo <= f <= hi for f in fractions), fractions
    assert not np.array_equal(random_mask((96, 80), 0.1, 0.2, 1), random_mask((96, 80), 0.1, 0.2, 2))


def test_evaluate_inpainting_protocol_reports_cell_errors_per_bin(tiny_run, tmp_path, capsys, monkeypatch):
    from skimage import data

    intact = tmp_path / "intact"
    img = (np.asarray(data.cell())[:96:2, :96:2]).astype(np.uint8)   # real microscopy, 48 x 48
    io.write(intact / "cell.png", img[None])
    assert main(["evaluate", "--task", "inpainting", "--model", str(tiny_run), "--real", str(intact),
                 "--out", str(tmp_path / "rep"), "--steps", "4", "--jump", "2", "--resample", "1",
                 "--jump-until", "0.5", "--eta", "0"]) == 0
    out = capsys.readouterr().out
    assert "masks 5%-15%" in out and "4 network calls per tile" in out
    import json
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert set(m["per_bin_median"]) == {"5%-15%", "15%-30%", "30%-50%"}
    assert (m["steps"], m["jump"], m["resample"], m["tile"], m["precision"]) == (4, 2, 1, None, "auto")
    assert (m["tile_px"], m["overlap_px"]) == (32, 8)       # the tiles used: the default, the model's training size
    assert (m["jump_until"], m["eta"]) == (0.5, 0.0)
    assert len(m["per_image"]) == 3 and all(0.05 <= r["mask_fraction"] <= 0.5 for r in m["per_image"])
    for r in m["per_image"]:
        y = io.read(tmp_path / "rep" / "repaired" / f"cell_bin{m['per_image'].index(r)}.png")[0][0]
        mask = io.read(tmp_path / "rep" / "masks" / f"cell_bin{m['per_image'].index(r)}.png")[0][0] > 0
        assert np.array_equal(y[~mask], img[~mask])
    # tiles wholly in a mask are counted per repaint and summed (small tiles, so that the larger masks hold some)
    from neurodiff.tiling import regions
    assert main(["evaluate", "--task", "inpainting", "--model", str(tiny_run), "--real", str(intact), "--out",
                 str(tmp_path / "rep8"), "--steps", "2", "--jump", "1", "--resample", "1", "--tile", "8"]) == 0
    m8 = json.loads((tmp_path / "rep8" / "metrics.json").read_text())
    assert (m8["tile_px"], m8["overlap_px"]) == (8, 2)
    assert m8["tiles_blind"] == sum(r["tiles_blind"] for r in m8["per_image"]) > 0
    for r in m8["per_image"]:
        mask = io.read(tmp_path / "rep8" / "masks" / f"cell_bin{m8['per_image'].index(r)}.png")[0][0] > 0
        assert r["tiles_blind"] == sum(bool(mask[g].all()) for g in regions(list(mask.shape), 8, 2))
    import neurodiff.metrics.inpainting as inpainting_mod      # --tile auto: a tile per mask, none wholly in it

    def block(spatial, lo, hi, seed):          # a square block in the 48^2 image: 34, 38, 42 px in the three bins
        m, k = np.zeros(spatial, bool), 34 + 4 * (lo > 0.1) + 4 * (lo > 0.2)
        m[2:2 + k, 2:2 + k] = True
        return m

    monkeypatch.setattr(inpainting_mod, "random_mask", block)
    assert main(["evaluate", "--task", "inpainting", "--model", str(tiny_run), "--real", str(intact), "--out",
                 str(tmp_path / "auto"), "--steps", "2", "--jump", "1", "--resample", "1", "--tile", "auto"]) == 0
    ma = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert ma["tile"] == "auto" and ma["tiles_blind"] == 0
    assert [r["tile_px"] for r in ma["per_image"]] == [36, 40, 44]       # the least multiple of 2 above each
    assert main(["evaluate", "--task", "inpainting", "--model", str(tiny_run), "--real", str(intact), "--out",
                 str(tmp_path / "x"), "--tile", "auto", "--batch", "3"]) == 2
    assert "--tile auto picks a tile per mask; --batch 3 repaints" in capsys.readouterr().err
    assert main(["evaluate", "--task", "generation", "--model", str(tiny_run), "--real", str(intact),
                 "--out", str(tmp_path / "x")]) == 2
    capsys.readouterr()
    bad = img.astype(np.float32)
    bad[3, 4] = np.nan
    io.write(tmp_path / "bad" / "nan.tif", bad[None], io.ImageMeta(format="tiff", dtype="float32"))
    assert main(["evaluate", "--task", "inpainting", "--model", str(tiny_run), "--real", str(tmp_path / "bad"),
                 "--out", str(tmp_path / "y"), "--steps", "2"]) == 2
    assert capsys.readouterr().err.strip() == (f"neurodiff: error: {tmp_path / 'bad' / 'nan.tif'}: the image holds "
                                               "NaN or Inf values; expected intact images")


def test_vp_model_with_a_label_and_guidance_inpaints(slice_folder, tmp_path):
    run = tmp_path / "vp"
    assert main(["train", "tiny", "--data", str(slice_folder), "--out", str(run), "--no-progress",
                 "--set", "diffusion.precond=vp", "--set", "diffusion.vp.T=100", "--set", "data.labels=folders",
                 "--set", "train.total_nimg=16", "--set", "train.batch=8"]) == 0
    img = next(slice_folder.rglob("*.png"))
    out = tmp_path / "r.png"
    assert main(["inpaint", str(run), "--image", str(img), "--box", "8:20,4:30", "--out", str(out), "--steps", "10",
                 "--jump", "2", "--resample", "2", "--label", "high", "--guidance", "2", "--no-progress"]) == 0
    x, y = io.read(img)[0][0], io.read(out)[0][0]
    keep = np.ones(x.shape, bool)
    keep[8:20, 4:30] = False
    assert np.array_equal(x[keep], y[keep]) and not np.array_equal(x[~keep], y[~keep])
    assert main(["inpaint", str(run), "--image", str(img), "--box", "8:20,4:30", "--out", str(out),
                 "--label", "nope"]) == 2


def test_evaluate_inpainting_masks_per_bin_and_the_pasted_tissue_reference(tiny_run, tmp_path):
    import json

    from neurodiff.metrics.inpainting import evaluate_inpainting
    from neurodiff.train.state import load_model

    yy, xx = np.mgrid[0:48, 0:48]
    img = np.zeros((48, 48), np.uint8)
    for cy, cx in [(8, 8), (8, 30), (24, 16), (24, 40), (40, 8), (40, 30), (16, 22), (34, 20)]:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = 200
    intact = tmp_path / "intact"
    io.write(intact / "a.png", img[None])
    io.write(intact / "b.png", img[None])      # identical donor: pasting its tissue changes nothing
    m = evaluate_inpainting(load_model(tiny_run), intact, tmp_path / "rep", steps=3, jump=1, resample=1,
                            masks_per_bin=2, progress=False)
    assert len(m["per_image"]) == 12 and m["masks_per_bin"] == 2
    assert all(v["masks"] == 4 for v in m["per_bin_median"].values())
    assert (tmp_path / "rep" / "repaired" / "a_bin2_m1.png").exists()
    masks = {(r["file"], r["bin"], r["mask_fraction"]) for r in m["per_image"]}
    assert len(masks) == 12                      # every mask drawn anew
    counted = [r for r in m["per_image"] if r["density_real"] > 0]
    assert counted and all(r["reference_density_rel_err"] == 0 for r in counted)
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["masks_per_bin"] == 2
    assert all(r["reference_patch_density_rel_err"] == 0 for r in m["per_image"])
    for b, v in m["per_bin_median"].items():   # pooled: the bin's nuclei counted together
        sel = [r for r in m["per_image"] if r["bin"] == b]
        n_r, n_f = sum(r["real_cells"] for r in sel), sum(r["cells"] for r in sel)
        assert v["pooled_density_rel_err"] == pytest.approx(abs(n_f - n_r) / n_r) and v["reference_pooled_density_rel_err"] == 0
    assert all(r["real_cells"] == round(r["density_real"] * r["mask_fraction"] * 48 * 48 / 1e6) for r in m["per_image"])
    # a repaint that erases every nucleus in the mask: in-mask density error 100 %, whole-patch error its share
    from neurodiff.metrics.inpainting import _compare
    from neurodiff.metrics.cells import segment_nuclei

    lab = segment_nuclei(img[None], dims=2)
    mask = np.zeros((48, 48), bool)
    mask[:29] = True                # the top rows hold 5 of the 8 nuclei whole
    erased = np.where(mask, 0, img)[None].astype(np.uint8)
    e = _compare(lab, segment_nuclei(erased, dims=2), mask, "")
    assert e["density_rel_err"] == 1 and e["real_cells"] == 5 and e["patch_density_rel_err"] == pytest.approx(5 / 8)
    with pytest.raises(NeurodiffError, match="masks-per-bin"):
        evaluate_inpainting(load_model(tiny_run), intact, tmp_path / "x", masks_per_bin=0)


def test_a_cut_off_evaluation_keeps_its_images_and_resumes_to_the_uninterrupted_result(tiny_run, tmp_path,
                                                                                       monkeypatch):
    import json

    import neurodiff.tasks.inpaint as inpaint_mod
    from neurodiff.metrics.inpainting import evaluate_inpainting
    from neurodiff.train.state import load_model

    img = (np.arange(48 * 48).reshape(48, 48) % 251).astype(np.uint8)
    intact = tmp_path / "intact"
    for k, name in enumerate(("a.png", "b.png", "c.png")):
        io.write(intact / name, np.roll(img, 7 * k, axis=1)[None])
    opts = dict(steps=3, jump=1, resample=1, progress=False)
    model = load_model(tiny_run)
    whole = evaluate_inpainting(model, intact, tmp_path / "whole", **opts)
    assert whole["complete"] and whole["images_done"] == ["a.png", "b.png", "c.png"]

    real, calls = inpaint_mod.inpaint_array, []

    def counted(*a, **kw):
        calls.append(kw["seed"])
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(inpaint_mod, "inpaint_array", counted)
    stop_at = 4                      # three masks per image: the first mask of b.png
    with pytest.raises(KeyboardInterrupt):
        evaluate_inpainting(model, intact, tmp_path / "cut", **opts)
    part = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert not part["complete"] and part["images_done"] == ["a.png"] and len(part["per_image"]) == 3
    assert part["n_images"] == 1 and set(part["per_bin_median"]) == set(whole["per_bin_median"])
    with pytest.raises(NeurodiffError, match="steps=3, not 4"):
        evaluate_inpainting(model, intact, tmp_path / "cut", **{**opts, "steps": 4}, resume=True)
    record = tmp_path / "cut" / "metrics.json"
    kept = record.read_text()
    record.write_text(json.dumps({**part, "settings": {k: v for k, v in part["settings"].items() if k != "feather"}}))
    with pytest.raises(NeurodiffError, match="feather=None"):     # tiles before the soft band: other fills
        evaluate_inpainting(model, intact, tmp_path / "cut", **opts, resume=True)
    record.write_text(kept)
    with pytest.raises(NeurodiffError, match="no earlier evaluation"):
        evaluate_inpainting(model, intact, tmp_path / "none", **opts, resume=True)
    calls.clear()
    stop_at = None
    resumed = evaluate_inpainting(model, intact, tmp_path / "cut", **opts, resume=True)
    assert len(calls) == 6           # b.png and c.png only: a.png's three repaints are kept
    assert resumed["complete"] and resumed["images_done"] == whole["images_done"]
    same = lambda a, b: json.dumps(a) == json.dumps(b)    # noqa: E731 (NaN where a mask holds no nuclei)
    assert same(resumed["per_image"], whole["per_image"]) and same(resumed["per_bin_median"], whole["per_bin_median"])
    assert same(json.loads((tmp_path / "cut" / "metrics.json").read_text())["per_image"], whole["per_image"])
    assert main(["evaluate", "--task", "generation", "--real", str(intact), "--fake", str(intact),
                 "--out", str(tmp_path / "g"), "--resume"]) == 2


def test_flips_compare_the_likeliest_classes():
    from neurodiff.metrics.inpainting import compare_classes

    p = np.array([0.6, 0.3, 0.1])
    assert compare_classes(p, p, "") == {"class": 0, "flip": 0, "flip_top2": 0}
    assert compare_classes(p, np.array([0.3, 0.5, 0.2]), "r_") == {"r_class": 1, "r_flip": 1, "r_flip_top2": 0}
    assert compare_classes(p, np.array([0.1, 0.2, 0.7]), "") == {"class": 2, "flip": 1, "flip_top2": 1}


class BrightLeft(torch.nn.Module):
    """A 'classifier': class 1 when the left half is brighter than the right, else class 0 (logits [N, 2])."""

    def forward(self, x):
        w = x.shape[-1] // 2
        d = x[..., :w].mean(dim=(1, 2, 3)) - x[..., w:].mean(dim=(1, 2, 3))
        return torch.stack([-d, d], dim=1) * 50


def test_evaluate_inpainting_counts_classification_flips(tiny_run, tmp_path, slice_folder, capsys):
    import json

    from neurodiff.metrics.features import load_classifier

    img = np.zeros((48, 48), np.uint8)
    img[:, :24] = 180                        # bright left half: class 1
    intact = tmp_path / "intact"
    io.write(intact / "a.png", img[None])
    io.write(intact / "b.png", img[None])    # identical donor: pasting its tissue never flips a class
    clf_file = tmp_path / "bright_left.pt"
    torch.jit.script(BrightLeft()).save(str(clf_file))
    assert main(["evaluate", "--task", "inpainting", "--model", str(tiny_run), "--real", str(intact), "--out",
                 str(tmp_path / "rep"), "--steps", "3", "--jump", "1", "--resample", "1", "--classifier",
                 str(clf_file)]) == 0
    assert "classification flips" in capsys.readouterr().out
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    clf = load_classifier(clf_file)
    for r in m["per_image"]:                 # each flip agrees with the classifier run on the written files
        b = r["bin"]
        k = ["5%-15%", "15%-30%", "30%-50%"].index(b)
        y = io.read(tmp_path / "rep" / "repaired" / f"{r['file'][0]}_bin{k}.png")[0]
        x = torch.from_numpy(y.astype(np.float32) / 90.0 - 1.0)[None]   # min-max of the intact set: 0..180
        assert r["class_real"] == 1 and r["class"] == int(clf(x).argmax()) and r["flip"] == int(r["class"] != 1)
        assert r["reference_flip"] == 0 and r["flip_top2"] == 0       # two classes: always in the top 2
    for b, v in m["per_bin_median"].items():
        sel = [r for r in m["per_image"] if r["bin"] == b]
        assert v["classification_flips"] == pytest.approx(np.mean([r["flip"] for r in sel]))
        assert v["reference_classification_flips"] == 0
    assert m["classifier"] == str(clf_file)
    # a feature network trained here on class sub-folders serves too; one trained without labels is refused
    feats = tmp_path / "f.safetensors"
    assert main(["train-features", "--data", str(slice_folder), "--out", str(feats), "--steps", "2", "--batch", "4",
                 "--size", "32", "--no-progress"]) == 0
    assert load_classifier(feats)(torch.zeros(3, 1, 48, 48)).shape == (3, 2)   # classes high / low
    assert main(["train-features", "--data", str(slice_folder), "--out", str(tmp_path / "u.safetensors"), "--steps",
                 "2", "--batch", "4", "--size", "32", "--no-labels", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--task", "inpainting", "--model", str(tiny_run), "--real", str(intact), "--out",
                 str(tmp_path / "x"), "--steps", "2", "--classifier", str(tmp_path / "u.safetensors")]) == 2
    assert "no class head" in capsys.readouterr().err
    assert main(["evaluate", "--task", "paired", "--real", str(intact), "--fake", str(intact), "--out",
                 str(tmp_path / "y"), "--classifier", str(clf_file)]) == 2
    assert "--classifier: only with --task inpainting --model" in capsys.readouterr().err


def test_bf16_inpainting_keeps_known_pixels_and_stays_close_to_float32(tiny_run, mni, tmp_path, capsys,
                                                                       monkeypatch):
    """--precision bf16 runs the network under bf16 autocast on CPUs with native bf16: the fill changes a little,
    the known pixels not at all. Where bf16 would be emulated it falls back to float32 with one warning. A bad
    value and --precision outside inpainting --model are one-line errors."""
    import neurodiff.cli as cli
    import neurodiff.precision as precision
    from neurodiff.train.state import load_model

    model = load_model(tiny_run)
    img = mni[40:104, 30:94, 90].astype(np.float32)[None]
    mask = np.zeros(img.shape[1:], bool)
    mask[20:40, 10:50] = True

    def run(p):
        return inpaint_array(model, img, mask, steps=4, jump=2, resample=2, tile=0, seed=3, precision=p)[0]

    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    runs = {p: run(p) for p in ("fp32", "auto", "bf16")}
    assert np.array_equal(runs["auto"], runs["fp32"])          # auto = exact float32 on a CPU
    y = runs["bf16"]
    assert np.array_equal(y[:, ~mask], img[:, ~mask])
    diff = np.abs(y[:, mask] - runs["fp32"][:, mask])
    assert 0 < diff.max() and diff.mean() < 0.05 * np.ptp(img), (diff.max(), diff.mean())
    assert "no native bf16" not in capsys.readouterr().out
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)    # e.g. an AVX2-only CPU
    assert np.array_equal(run("bf16"), runs["fp32"]) and np.array_equal(run("bf16"), runs["fp32"])
    assert capsys.readouterr().out.count("--precision=bf16 but this CPU") == 1
    with pytest.raises(NeurodiffError, match="--precision: expected one of"):
        inpaint_array(model, img, mask, steps=2, tile=0, precision="fp16")
    assert cli.PRECISIONS == precision.PRECISIONS
    assert main(["evaluate", "--real", str(tmp_path), "--fake", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--precision", "bf16"]) == 2
    assert "--precision: only with --task inpainting --model" in capsys.readouterr().err


def test_batched_repaints_match_one_at_a_time_and_evaluate_batches_them(tiny_run, mni, tmp_path, capsys):
    """inpaint_batch: N masks of one image in one batch give what N single whole-image runs with the same seeds
    give (up to the batched network's rounding), known pixels exact; evaluate --batch uses it, same masks."""
    import json

    from neurodiff.tasks.inpaint import inpaint_batch
    from neurodiff.train.state import load_model

    model = load_model(tiny_run)
    img = mni[40:104, 30:94, 90].astype(np.uint8)[None]
    masks = np.zeros((3, 64, 64), bool)
    masks[0, 20:40, 10:50], masks[1, :, 30:36], masks[2, 5:60, 5:20] = True, True, True
    opts = dict(steps=6, jump=2, resample=2, jump_until=0.5, eta=0.5)
    ys, _ = inpaint_batch(model, img, masks, [5, 6, 7], **opts)
    assert ys.shape == (3, *img.shape) and ys.dtype == img.dtype
    for y, m, seed in zip(ys, masks, [5, 6, 7]):
        one = inpaint_array(model, img, m, tile=0, seed=seed, **opts)[0]
        assert np.array_equal(y[:, ~m], img[:, ~m]) and not np.array_equal(y[:, m], img[:, m])
        assert np.abs(y.astype(int) - one).max() <= 2 and np.mean(y == one) > 0.99
    with pytest.raises(NeurodiffError, match="one seed per mask"):
        inpaint_batch(model, img, masks, [1, 2])
    # one image per mask: the same repaints (the same network input, batch for batch)
    per_mask = inpaint_batch(model, np.stack([img] * 3), masks, [5, 6, 7], **opts)[0]
    assert np.array_equal(per_mask, ys)
    with pytest.raises(NeurodiffError, match="one per mask"):
        inpaint_batch(model, np.stack([img] * 2), masks, [5, 6, 7])
    intact = tmp_path / "intact"
    io.write(intact / "a.png", img)
    io.write(intact / "b.png", mni[50:114, 40:104, 90].astype(np.uint8)[None])
    run = {}
    for b in (1, 4, 12):      # 12: both images' 6 masks in one batch
        assert main(["evaluate", "--task", "inpainting", "--model", str(tiny_run), "--real", str(intact), "--out",
                     str(tmp_path / f"b{b}"), "--steps", "4", "--jump", "2", "--resample", "2", "--tile", "0",
                     "--masks-per-bin", "2", "--batch", str(b)]) == 0
        run[b] = json.loads((tmp_path / f"b{b}" / "metrics.json").read_text())
        assert run[b]["batch"] == b and run[b]["network_calls_per_tile"] == 6 and len(run[b]["per_image"]) == 12
        assert run[b]["tile_px"] == 0 and all(r["tile_px"] == 0 for r in run[b]["per_image"])   # whole images
    for r1, r4, r12 in zip(run[1]["per_image"], run[4]["per_image"], run[12]["per_image"]):
        assert r1["mask_fraction"] == r4["mask_fraction"] == r12["mask_fraction"]
        assert abs(r1["psnr_in_mask"] - r4["psnr_in_mask"]) < 0.2 and abs(r1["psnr_in_mask"] - r12["psnr_in_mask"]) < 0.2
    assert [r["file"] for r in run[12]["per_image"]] == ["a.png"] * 6 + ["b.png"] * 6
    for name in ("a_bin0.png", "b_bin2_m1.png"):
        y4, y12 = (io.read(tmp_path / f"b{b}" / "repaired" / name)[0].astype(int) for b in (4, 12))
        assert np.abs(y4 - y12).max() <= 2 and np.mean(y4 == y12) > 0.99
    assert main(["evaluate", "--task", "inpainting", "--model", str(tiny_run), "--real", str(intact), "--out",
                 str(tmp_path / "x"), "--tile", "32", "--batch", "2"]) == 2
    assert "repaints the whole image as one tile" in capsys.readouterr().err
    assert main(["evaluate", "--task", "inpainting", "--model", str(tiny_run), "--real", str(intact), "--out",
                 str(tmp_path / "x"), "--batch", "0"]) == 2


def _load_bench(name):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paired_schedule_comparison_pairs_masks_and_decides_only_when_the_interval_allows(tmp_path, capsys, monkeypatch):
    """bench/inpaint_paired.py: masks paired across schedules, the ratio's bootstrap interval, the verdict."""
    import json
    paired = _load_bench("inpaint_paired")
    rng = np.random.default_rng(0)
    ref_err = rng.uniform(0.1, 0.5, 60)

    def write(name, steps, calls, scale):
        rows = [{"file": f"im{i}.png", "bin": "5%-15%", "mask_fraction": 0.1 + i / 1000,
                 **{k: float(e * scale) for k, _ in paired.ERRORS}} for i, e in enumerate(ref_err)]
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(
            {"steps": steps, "jump": 10, "resample": 10, "network_calls_per_tile": calls, "per_image": rows[::-1]}))

    write("eval_250_10_10", 250, 2410, 1.0)
    write("eval_100_10_10", 100, 910, 1.0)       # the same errors mask by mask: ratio 1, interval (1, 1)
    write("eval_50_10_10", 50, 460, 2.0)         # twice the errors everywhere: worse
    write("eval_100_10_10_t64", 100, 910, 9.0)   # a TAG'd folder differs in more than the schedule: skipped
    monkeypatch.setattr("sys.argv", ["inpaint_paired.py", str(tmp_path)])
    paired.main()
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| 100") or l.startswith("| 50")]
    assert len(lines) == 8
    assert all("| 60 |" in l and "1.00 (1.00–1.00) | within 10 % | 0 |" in l for l in lines[:4])
    assert all("2.00 (2.00–2.00) | worse | 0 |" in l for l in lines[4:])
    monkeypatch.setattr("sys.argv", ["inpaint_paired.py", str(tmp_path), "--tags", "t64"])
    paired.main()                                # named with --tags, the TAG'd folder is compared too
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| 100 / 10 / 10 (t64) | 910 | 60 |")]
    assert len(lines) == 4 and all("9.00 (9.00–9.00) | worse |" in l for l in lines)
    r, lo, hi = paired.ratio_ci(rng.permutation(ref_err), ref_err)    # unpaired noise: an interval around 1
    assert lo < 1.0 < hi and paired.verdict(lo, hi) == "undecided"


def test_he_bench_windows_hold_out_tissue_and_avoid_training_tiles_and_bands():
    """bench/inpaint_he_data.py: integral-image window sums equal brute force; held-out zones are the densest
    non-overlapping windows; evaluation windows avoid what training saw and bright bands."""
    he = _load_bench("inpaint_he_data")
    rng = np.random.default_rng(1)
    a = rng.random((23, 31))
    s = he.window_sums(a, 5)
    assert s.shape == (19, 27)
    np.testing.assert_allclose(s, [[a[y:y + 5, x:x + 5].sum() for x in range(27)] for y in range(19)])
    tissue = np.zeros((40, 60))
    tissue[2:12, 3:13] = 1       # the densest 10x10 window
    tissue[20:30, 40:50] = 0.9   # the second
    tissue[4:14, 5:15] += 0.5    # overlaps the first: must not be picked as a window of its own
    corners = he.pick_windows(tissue, 10, 2)
    assert corners[0] in [(y, x) for y in range(2, 5) for x in range(3, 6)] and corners[1] == (20, 40)
    (y0, x0), (y1, x1) = he.pick_windows(rng.random((50, 50)), 20, 2)
    assert abs(y0 - y1) >= 20 or abs(x0 - x1) >= 20
    # evaluation windows: never where training saw tissue, and not where a large bright band would be "nuclei"
    img = np.zeros((64, 128), np.uint8)
    yy, xx = np.mgrid[0:64, 0:128]
    for cy in range(6, 64, 12):
        for cx in range(6, 128, 12):
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = 200   # small nuclei everywhere
    img[:, 80:112] = 200                                     # a band: one object far over `big`
    seen = np.zeros(img.shape, bool)
    seen[:, :24] = True
    corners = he.eval_windows(img, np.ones(img.shape), seen, 32, 2, stride=8, big=100)
    assert len(corners) == 2 and all(x >= 24 and (x + 32 <= 80 or x >= 112) for _, x in corners)
    # training tiles: only the (nearly) all-tissue ones train, but every half-tissue tile counts as seen
    tissue = np.zeros((16, 48), bool)
    tissue[:, :8] = True          # tile x=0: 100 % tissue (x=4 too) -> trains
    tissue[:, 8:14] = True        # x=8: 6/8 tissue -> seen only; x=12: 2/8 -> neither
    near = np.zeros(tissue.shape, bool)
    near[:, 40:] = True           # x=40: all tissue but next to a held-out zone -> neither
    tissue[:, 40:] = True
    corners, seen = he.train_tiles(tissue, near, 8, min_tissue=0.9)
    assert [x for y, x in corners if y == 0] == [0, 4] and {y for y, _ in corners} == {0, 4, 8}
    assert seen[:, :16].all() and not seen[:, 16:].any()
    assert len(he.train_tiles(tissue, near, 8, min_tissue=0.5)[0]) == 3 * 3


def test_floor_bench_pairs_windows_that_do_not_overlap_and_tables_by_nuclei_count():
    """bench/inpaint_floor.py: in-mask counts and known-part density per window, the density-matched donor is a
    non-overlapping window within the tolerance, errors are relative to window A's, medians by nuclei count."""
    fl = _load_bench("inpaint_floor")
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    centres, areas = np.array([[1, 1], [2, 3], [5, 7], [8, 8]]), np.array([10.0, 20.0, 30.0, 40.0])
    n, size, density = fl.mask_stats(centres, areas, np.ones((10, 10), bool), mask)
    assert (n, size) == (2, 15.0) and density == pytest.approx(2 / 50)
    corners = [(0, 0), (0, 5), (0, 10), (0, 20)]            # windows of k=10: (0,5) overlaps both neighbours
    stats = [(10, 100.0, 0.10), (99, 1.0, 0.10), (12, 120.0, 0.30), (8, 80.0, 0.104)]
    rows = fl.pairs(stats, corners, 10, 0.05, np.random.default_rng(0))
    assert len(rows) == 4
    a = rows[0]                                              # window 0: the matched donor is window 3 (0.104)
    assert a["n"] == 10 and a["matched_density"] == pytest.approx(0.2) and a["matched_size"] == pytest.approx(0.2)
    assert "matched_density" not in rows[2]                  # no other window within 5 % of 0.30
    assert fl.window_corners(np.pad(np.ones((8, 8)), ((0, 8), (0, 8))), 8, 0.9, 4) == [(0, 0)]
    table = fl.by_count([{"n": 6, "e": 0.1}, {"n": 7, "e": 0.3}, {"n": 50, "e": 0.5}], ("e",))
    assert [(t["nuclei"], t["rows"], t["e"]) for t in table] == [("5-9", 2, pytest.approx(0.2)), ("40-79", 1, 0.5)]


def test_seams_bench_finds_the_lines_where_the_writing_tile_changes_and_flags_steps_there(monkeypatch):
    """bench/inpaint_seams.py: its tile owners are inpaint_array's (each tile fills with its own value here), and
    its ratio is about 1 on noise, well above 1 where each tile's area is offset."""
    import neurodiff.tasks.inpaint as inpaint_mod

    sb = _load_bench("inpaint_seams")
    own = sb.owners(256, 64, 16)
    assert np.flatnonzero(np.r_[False, own[1:] != own[:-1]]).tolist() == [56, 104, 152, 200]
    calls = []

    def one_value(D, known, mask, *a, **kw):           # tile number k fills with the value k (in [-1, 1] units)
        calls.append(1)
        return torch.where(mask > 0, -1 + 2 * len(calls) / 255, known).float()

    monkeypatch.setattr(inpaint_mod, "repaint", one_value)
    hole = np.zeros((256, 256), bool)
    hole[48:208, 48:208] = True
    y, _ = inpaint_array(flat_model(2, [64, 64]), np.zeros((1, 256, 256), np.uint8), hole, tile=64, overlap=16,
                         feather=0)
    ids = np.unique(y[0][hole], return_inverse=True)[1].reshape(160, 160)
    assert len(calls) == 25 and np.array_equal(ids, own[48:208, None] * 5 + own[None, 48:208])   # grid order
    calls.clear()                # feathered: each tile also writes 8 px of its earlier neighbours' fills
    y, _ = inpaint_array(flat_model(2, [64, 64]), np.zeros((1, 256, 256), np.uint8), hole, tile=64, overlap=16)
    ids = np.unique(y[0][hole], return_inverse=True)[1].reshape(160, 160)
    moved = np.unique(own[56:216, None] * 5 + own[None, 56:216], return_inverse=True)[1].reshape(160, 160)
    assert len(calls) == 25 and np.array_equal(ids, moved)         # the lines between writers move back 8 px
    with pytest.raises(NeurodiffError, match=r"feather 9: expected an integer in \[0, overlap // 2 = 8\]"):
        inpaint_array(flat_model(2, [64, 64]), np.zeros((1, 256, 256), np.uint8), hole, tile=64, overlap=16,
                      feather=9)
    rng = np.random.default_rng(0)
    noise = [rng.normal(size=(256, 256)) for _ in range(2)]
    offset = [n + 3 * (own[:, None] % 2 + own[None, :] % 2) for n in noise]
    for measure in sb.MEASURES:
        flat = sb.seam_ratios(noise, 48, 208, own, measure)
        assert 0.8 < flat["tile_boundary_ratio"] < 1.25 and 0.8 < flat["hole_edge_ratio"] < 1.25
        assert sb.seam_ratios(offset, 48, 208, own, measure)["tile_boundary_ratio"] > 2


def test_a_run_stopped_between_writing_a_feathered_tile_and_recording_it_resumes_exactly(tmp_path):
    """A feathered tile rewrites pixels it reads: stopped after writing tile j but before recording it, the resumed
    run must not read its own output (what the tile read is kept in the state folder until it is recorded)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (1, 24, 24)).astype(np.uint8)
    mask = np.zeros((24, 24), bool)
    mask[3:21, 3:21] = True
    model, kw = flat_model(2, [8, 8], local_denoiser), dict(steps=6, jump=2, resample=2, tile=8, overlap=4, seed=3)
    ref, info = inpaint_array(model, img, mask, **kw)

    class Stop(Exception):
        pass

    for j in (4, 9):                           # tiles in the hole's first and second rows of tiles
        out, state = img.copy(), tmp_path / f"state{j}"

        def on_tile(n, j=j):
            if n == j + 1:
                raise Stop                     # tile j is written, not recorded

        with pytest.raises(Stop):
            inpaint_array(model, img, mask, out=out, on_tile=on_tile, state=state, **kw)
        kept = list(state.glob("tile-*-read.pt"))
        res, _ = inpaint_array(model, img, mask, out=out, start=j, on_tile=lambda n: None, state=state, **kw)
        assert np.array_equal(res, ref)
        assert len(kept) == 1 and not list(state.glob("*.pt"))      # kept until the tile was recorded


def test_tif_outputs_go_tile_by_tile_only_with_zarr_installed(monkeypatch):
    import importlib.util

    from neurodiff.tasks.inpaint_cli import tiled_output

    assert tiled_output("a.tif") and tiled_output("a.zarr") and not tiled_output("a.png")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "zarr" else real(name, *a))
    assert not tiled_output("a.tif")                 # written from memory at the end, as before


def test_tile_bookkeeping_by_region_matches_a_full_size_todo_mask():
    """Which tiles are sampled, what each fills and what it writes are found from the tiles' written parts,
    reading the mask by region (no full-size copy); a reference keeps the full-size 'still to fill' mask."""
    from neurodiff.tasks.inpaint import _commit_area, _tile_fill, _tiles_to_sample
    from neurodiff.tiling import axis_spans, regions

    def reference(mask, tile, overlap, feather=0):
        whole = not tile or all(n <= tile for n in mask.shape)
        grid = [tuple(slice(0, n) for n in mask.shape)] if whole else regions(list(mask.shape), tile, overlap)
        todo, out, parts = mask.copy(), [], np.zeros(mask.shape, bool)     # parts: the earlier tiles' parts
        for k, region in enumerate(grid):
            area = _commit_area(region, mask.shape, overlap // 2)
            first = np.argwhere(~parts[area]) + [a.start for a in area]      # what this tile writes first
            parts[area] = True
            if mask[area].any():
                fill = todo[region].copy()
                done = (mask & ~todo)[region]               # written by earlier tiles
                boxes = [np.zeros(fill.shape, bool) for _ in range(feather + 1)]
                for d, box in enumerate(boxes):             # that box grown by d px, within the tile
                    if len(first):
                        box[tuple(slice(max(lo - d, r.start) - r.start, min(hi + 1 + d, r.stop) - r.start)
                                  for lo, hi, r in zip(first.min(0), first.max(0), region))] = True
                commit, soft = fill & boxes[0], fill.astype(float)
                for d in range(1, feather + 1 if commit.any() else 1):   # a tile with nothing to write skips
                    band = boxes[d] & ~boxes[d - 1] & done
                    soft[band], commit = 1 - d / (feather + 1), commit | band
                todo[area] = False
                out.append((k, soft if (soft % 1).any() else fill, commit, bool(mask[region].all())))
        return out

    rng, bands, blinds = np.random.default_rng(0), 0, 0
    for trial in range(300):
        dims, tile = int(rng.choice([2, 3])), int(rng.choice([0, 4, 8]))
        shape = tuple(int(rng.integers(1, 3 * max(tile, 4) + 5)) for _ in range(dims))
        overlap = int(rng.integers(0, tile)) if tile else 0
        mask = rng.random(shape) < rng.choice([0.002, 0.05, 0.3, 0.97])
        if not mask.any():
            continue
        whole = not tile or all(n <= tile for n in shape)
        spans = [[slice(0, n)] for n in shape] if whole else axis_spans(list(shape), tile, overlap)
        areas = [[_commit_area((r,), (n,), overlap // 2)[0] for r in rs] for rs, n in zip(spans, shape)]
        lazy = RegionMask(shape, mask[None].astype(np.uint8)) if trial % 2 else mask
        tiles, filled, blind = _tiles_to_sample(lazy, shape, spans, areas)
        feather = int(rng.integers(0, overlap // 2 + 1))
        ref = reference(mask, tile, overlap, feather)
        assert filled == mask.sum() and tiles == [k for k, *_ in ref], (shape, tile, overlap)
        assert blind == sum(b for *_, b in ref), (shape, tile, overlap)       # tiles that see nothing of the image
        blinds += blind
        for k, fill, commit, _ in ref:
            got = _tile_fill(lazy, k, spans, areas, feather)
            assert got[1].dtype == fill.dtype and np.array_equal(got[1], fill), (shape, tile, overlap, feather, k)
            assert np.array_equal(got[2], commit), (shape, tile, overlap, feather, k)
            bands += int((fill % 1 > 0).sum())
    assert bands > 1000 and blinds > 20                     # the feathered bands and blind tiles were exercised


def test_mask_scan_reads_bounded_bands_of_large_volumes(monkeypatch):
    """The mask's hash and count: bands of about SCAN_PIXELS, also when one plane of a volume is larger."""
    import neurodiff.tasks.inpaint_cli as cli_mod

    rng = np.random.default_rng(5)
    vol = rng.random((5, 40, 30)) < 0.1
    reads = []

    class Lazy:
        shape, dtype = (1, *vol.shape), np.dtype(np.uint8)

        def __getitem__(self, key):
            reads.append(np.prod([k.stop - k.start for k in key[1:]]))
            return vol[None][key].astype(np.uint8)

    monkeypatch.setattr(cli_mod, "SCAN_PIXELS", 100)                    # smaller than one 40 x 30 plane
    vol[1:4, 3:11, 5:13] = True                                          # an 8^2 square, split over bands
    digest, n, side = cli_mod.scan_mask(RegionMask(vol.shape, Lazy()))
    assert n == vol.sum() and max(reads) <= 100 and sum(reads) == vol.size
    assert side == _largest_square(vol) >= 8                            # the rows of a plane carried across bands
    monkeypatch.setattr(cli_mod, "SCAN_PIXELS", 2400)                   # two planes at a time
    reads.clear()
    assert cli_mod.scan_mask(RegionMask(vol.shape, Lazy()))[1:] == (n, side) and max(reads) == 2400
    plane = vol[2]                                                      # 2D: bands of rows
    monkeypatch.setattr(cli_mod, "SCAN_PIXELS", 90)
    assert cli_mod.scan_mask(RegionMask(plane.shape, None, [(slice(3, 11), slice(5, 13))]))[1:] == (64, 8)
    assert cli_mod.scan_mask(RegionMask(plane.shape, plane[None].astype(np.uint8)))[2] == _largest_square(plane)
    assert cli_mod.scan_mask(RegionMask(vol.shape, Lazy()), square=False)[1:] == (n, 0)     # not looked for


def _stop_after_saves(monkeypatch, n: int) -> list:
    """Save a running repaint's state at every step, and stop the run (Ctrl-C) after the n-th save (None: never)."""
    import neurodiff.tasks.repaint_state as rs

    saved, real = [], rs.RepaintState.save

    def save(self, step, x, generators, final=False):
        real(self, step, x, generators, final)
        saved.append(step)
        if len(saved) == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(rs, "EVERY_S", 0.0)
    monkeypatch.setattr(rs.RepaintState, "save", save)
    return saved


def test_a_stopped_batch_of_repaints_goes_on_from_its_saved_state_to_the_same_result(tiny_run, mni, tmp_path,
                                                                                      monkeypatch):
    """inpaint_batch(state=FOLDER): the running batch is saved (x, the step, the generators) into a file of its
    own key; a call with the same inputs continues from it and gives the uninterrupted result exactly; the finished
    batch's state stays until the caller clears the folder (a call then returns it at once); other inputs' files
    are neither used nor touched."""
    from neurodiff.tasks.inpaint import inpaint_batch
    from neurodiff.tasks.repaint_state import clear
    from neurodiff.train.state import load_model

    model = load_model(tiny_run)
    img = mni[40:104, 30:94, 90].astype(np.uint8)[None]
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 20:40, 10:50], masks[1, 5:60, 5:20] = True, True
    opts = dict(steps=6, jump=2, resample=2, eta=0.5)
    whole, info = inpaint_batch(model, img, masks, [5, 6], **opts)
    assert info["resumed_at_step"] is None
    state = tmp_path / "states"
    saved = _stop_after_saves(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        inpaint_batch(model, img, masks, [5, 6], state=state, **opts)
    files = sorted(state.iterdir())
    assert saved == [0, 1, 2, 3] and len(files) == 1 and files[0].suffix == ".pt"
    saved = _stop_after_saves(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):           # seeds 5, 7: a file of their own, from the start
        inpaint_batch(model, img, masks, [5, 7], state=state, **opts)
    assert saved == [0, 1] and len(list(state.iterdir())) == 2
    saved = _stop_after_saves(monkeypatch, None)
    resumed, info = inpaint_batch(model, img, masks, [5, 6], state=state, **opts)
    last = saved[-1]                                 # every step saved, the last one too
    assert info["resumed_at_step"] == 3 and saved == list(range(4, last + 1)) and info["seconds_before"] > 0
    assert np.array_equal(resumed, whole) and len(list(state.iterdir())) == 2     # the final state is kept
    saved.clear()
    again, info = inpaint_batch(model, img, masks, [5, 6], state=state, **opts)
    assert info["resumed_at_step"] == last and saved == [] and np.array_equal(again, whole)
    clear(state)
    assert not state.exists()
    monkeypatch.undo()          # saves every minute (none in so short a run) and at the final step, as float32
    again, _ = inpaint_batch(model, img, masks, [5, 6], state=state, **opts)
    (only,) = state.iterdir()
    kept = torch.load(only, weights_only=True)
    assert kept["step"] == last and kept["x"].dtype == torch.float32 and np.array_equal(again, whole)
    from neurodiff.tasks.inpaint import repaint
    with pytest.raises(NeurodiffError, match="order 2 cannot continue"):
        repaint(None, torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4, dtype=bool), torch.ones(3), [0, 1, 2], [],
                eta=0, order=2, start=(0, torch.zeros(1, 1, 4, 4)))


def test_a_stopped_inpaint_goes_on_inside_the_tile_it_was_sampling(tiny_run, tmp_path, mni, monkeypatch, capsys):
    """neurodiff inpaint with a tiled --out: a stop in the middle of a tile keeps that tile's sampling too;
    --resume continues it from the saved step, to the uninterrupted run's pixels, and leaves no hidden file."""
    img = mni[10:190, 20:140, 90].astype(np.uint16) * 200
    src = tmp_path / "section.zarr"
    io.write(src, img[None], io.ImageMeta(format="zarr", dtype="uint16"))
    args = lambda out, *more: ["inpaint", str(tiny_run), "--image", str(src), "--box", "40:70,30:100",  # noqa: E731
                               "--out", str(out), "--steps", "4", "--jump", "2", "--resample", "2", "--no-progress",
                               *more]
    assert main(args(tmp_path / "whole.zarr")) == 0
    saved = _stop_after_saves(monkeypatch, 11)      # 8 steps per tile (2 up): the third step of the second tile
    assert main(args(tmp_path / "cut.zarr")) == 130
    state = tmp_path / ".cut.zarr.partial.repaint"
    # the first tile's state is deleted; the second's, and what that (feathered) tile read, are kept
    assert len(list(state.glob("*.pt"))) == 2 and len(list(state.glob("tile-*-read.pt"))) == 1
    assert saved[-3:] == [0, 1, 2]
    capsys.readouterr()
    assert main(args(tmp_path / "cut.zarr")) == 2 and "1 tile(s) written and one in progress" in capsys.readouterr().err
    saved = _stop_after_saves(monkeypatch, None)
    assert main(args(tmp_path / "cut.zarr", "--resume")) == 0
    assert "(1 written by the stopped run; tile 2 went on after 3 of its 8 schedule steps)" in capsys.readouterr().out
    assert saved[0] == 3                              # the first step sampled after the resume
    assert np.array_equal(io.read(tmp_path / "cut.zarr")[0], io.read(tmp_path / "whole.zarr")[0])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_nan_found_in_a_lazily_read_tile_names_the_image_file(tiny_run, tmp_path, mni, capsys):
    """A .zarr image is read tile by tile, so NaN in it is found only at the tile that reads it: the one-line error
    names the image file and the hidden copy to delete (it holds the NaN too), after the earlier tiles were done."""
    img = mni[10:190, 20:140, 90].astype(np.float32)
    img[60, 95] = np.nan                          # inside the box, in a tile sampled after the first
    src = tmp_path / "section.zarr"
    io.write(src, img[None], io.ImageMeta(format="zarr", dtype="float32"))
    code = main(["inpaint", str(tiny_run), "--image", str(src), "--box", "40:70,30:100", "--out",
                 str(tmp_path / "out.zarr"), "--steps", "2", "--jump", "1", "--resample", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"neurodiff: error: {src}: the image holds NaN or Inf values in [(") and \
        err.endswith(f"then delete {tmp_path / '.out.zarr.partial'} and run again"), err
    import json

    assert json.loads((tmp_path / ".out.zarr.partial.json").read_text())["tiles_done"] >= 1


def test_an_evaluation_cut_off_in_its_first_batch_goes_on_from_the_saved_repaints(tiny_run, mni, tmp_path,
                                                                                  monkeypatch):
    import json

    from neurodiff.metrics.inpainting import evaluate_inpainting
    from neurodiff.train.state import load_model

    intact = tmp_path / "intact"
    io.write(intact / "a.png", mni[40:104, 30:94, 90].astype(np.uint8)[None])
    io.write(intact / "b.png", mni[50:114, 40:104, 90].astype(np.uint8)[None])
    model = load_model(tiny_run)
    opts = dict(steps=4, jump=2, resample=2, tile=0, batch=6, progress=False)
    whole = evaluate_inpainting(model, intact, tmp_path / "whole", **opts)
    saved = _stop_after_saves(monkeypatch, 4)     # both images' 6 masks in one batch of 8 steps (2 up): the 4th
    with pytest.raises(KeyboardInterrupt):
        evaluate_inpainting(model, intact, tmp_path / "cut", **opts)
    assert saved == [0, 1, 2, 3]
    assert len(list((tmp_path / "cut" / ".repaint-state").glob("*.pt"))) == 1
    assert not (tmp_path / "cut" / "metrics.json").exists()
    saved = _stop_after_saves(monkeypatch, None)
    resumed = evaluate_inpainting(model, intact, tmp_path / "cut", **opts, resume=True)
    assert saved == [4, 5, 6, 7]                  # the batch went on from its fifth step
    same = lambda a, b: json.dumps(a) == json.dumps(b)    # noqa: E731
    assert resumed["complete"] and same(resumed["per_image"], whole["per_image"])
    assert not (tmp_path / "cut" / ".repaint-state").exists()
    # one mask at a time: cut in a.png's second mask; the first one's final state and the second's steps are kept
    opts = {**opts, "batch": 1}
    whole = evaluate_inpainting(model, intact, tmp_path / "whole1", **opts)
    saved = _stop_after_saves(monkeypatch, 11)     # 8 steps per mask, each saved, the last one too
    with pytest.raises(KeyboardInterrupt):
        evaluate_inpainting(model, intact, tmp_path / "cut1", **opts)
    assert len(list((tmp_path / "cut1" / ".repaint-state").glob("*.pt"))) == 2
    saved = _stop_after_saves(monkeypatch, None)
    resumed = evaluate_inpainting(model, intact, tmp_path / "cut1", **opts, resume=True)
    assert saved == [3, 4, 5, 6, 7] + list(range(8)) * 4 and same(resumed["per_image"], whole["per_image"])
    assert not (tmp_path / "cut1" / ".repaint-state").exists()
