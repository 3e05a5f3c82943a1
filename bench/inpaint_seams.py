"""Does tiled inpainting leave seams? A large hole in real tissue, filled tile by tile, measured across the lines
where one tile's written part meets the next one's.

    python bench/inpaint_seams.py MODEL IMAGES OUT [--block 160] [--tile 64] [--overlap 16] [--feathers 4,8]
                                  [--steps 50 --jump 5 --resample 5 --jump-until 0.5 --eta 0]
                                  [--train DIR]

IMAGES: a folder of 2D one-channel images (e.g. OUT/intact of bench/inpaint_he.sh, 256x256 H&E); MODEL: a model
trained on that kind of image (e.g. OUT/run). In every image a centred square of ``--block`` px is filled these
ways, all with the same schedule and seed:
- *untiled*: the whole image as one tile (``--tile 0``) -- no tile boundaries at all;
- *tiled*: tiles of ``--tile`` px overlapping by ``--overlap``, each tile a RePaint run in which what earlier tiles
  filled counts as known, and meets it at a hard line (``feather=0``);
- *feathered_F* for each F of ``--feathers``: the same, and each tile also refills F px of its neighbours' fills with
  a soft mask (``inpaint_array``'s ``feather``; ``inpaint`` uses overlap // 2);
- *independent tiles* (the control a seam metric must flag): each tile filled on its own from the original image,
  blind to its neighbours' fills, and pasted into the same written parts.
Seams are measured on the lines where the owner of the pixels changes (a pixel is written by the first tile in grid
order whose written part holds it): for every line position along both axes, inside the hole, the mean absolute
difference across the line -- of single pixels (``pixel``: sharp seams) and of the means of 8-px strips on either
side along 16-px segments (``strip``: offsets in brightness between tiles), and on the lines of the band a
feathered tile refills (F px before each boundary: a step that feathering only moves shows there). The ratio of the mean on the tile
boundaries to the mean on every other line in the hole is about 1 where there is no seam; the intact image gives
the ratio that real tissue has on the same lines, and the hole's own edges (known pixels against filled ones) the
discontinuity that any fill of this model and schedule has -- to a tile, its neighbours' fills are known pixels.
The nuclei in the hole (count, mean area; evaluate's segmentation) are counted in every fill too, overall and in
four rings by depth (px from the hole's edge, Chebyshev): a fill that follows the tissue around the hole keeps its
density at every depth, one that drifts to the model's training data moves towards that data's density with depth
(``--train DIR``: the density and mean area of the training images, segmented the same way). OUT gets seams.json
and, per image, the fills as PNGs; ``--measure-only`` measures the PNGs already there. (Fills of other tile and
window sizes, over several seeds: bench/inpaint_window.py.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from neurodiff.data import io
from neurodiff.tasks.inpaint import _commit_area, inpaint_array
from neurodiff.tiling import axis_spans
from neurodiff.train.state import load_model

MEASURES = {"pixel": (1, 1), "strip": (8, 16)}          # (strip width across the line, segment length along it)


def owners(n: int, tile: int, overlap: int) -> np.ndarray:
    """Along an axis of ``n`` px, the index of the tile that writes each pixel (the first whose written part holds
    it, as ``inpaint_array`` does)."""
    spans = axis_spans([n], tile, overlap)[0]
    own = np.full(n, -1)
    for i, s in enumerate(spans):
        a = _commit_area((s,), (n,), overlap // 2)[0]
        part = own[a]
        part[part < 0] = i
        own[a] = part
    return own


def line_stats(y: np.ndarray, lo: int, hi: int, width: int, seg: int) -> dict[int, np.ndarray]:
    """Vertical line at c (between columns c-1 and c) -> |mean of the ``width`` px before it - mean of the ``width``
    px after it| per segment of ``seg`` rows, over the hole's rows [lo, hi), for the lines from the hole's edge
    ``lo`` to its other edge ``hi``."""
    segs = [slice(r, r + seg) for r in range(lo, hi - seg + 1, seg)]
    return {c: np.array([abs(y[r, c - width:c].mean() - y[r, c:c + width].mean()) for r in segs])
            for c in range(lo, hi + 1)}


def seam_ratios(images: list[np.ndarray], lo: int, hi: int, own: np.ndarray, measure: str, band: int = 0) -> dict:
    """Means of the line statistic, both axes, all images: on the tile boundaries inside the hole, on the hole's
    edges (known against filled), on the ``band`` lines before each boundary (where a feathered tile refills its
    neighbour's fill: ``band_by_offset`` gives the mean at 1, 2, ... px before it, so a step the feathering only
    moves shows there), and on every other line whose strips lie inside the hole; ratios to the last."""
    width, seg = MEASURES[measure]
    edge = np.flatnonzero(np.r_[False, own[1:] != own[:-1]])   # a line at c lies between pixels c-1 and c
    before = {c - o: o for c in edge for o in range(1, band + 1)}
    groups = {"tile_boundary": [], "hole_edge": [], "band": [], "other": []}
    offsets = {o: [] for o in range(1, band + 1)}
    for y in images:
        for img in (y, y.T):                               # vertical lines, then horizontal ones
            for c, st in line_stats(img.astype(np.float64), lo, hi, width, seg).items():
                if c in (lo, hi):
                    groups["hole_edge"].append(st)
                elif lo + width <= c <= hi - width:
                    kind = "tile_boundary" if c in edge else "band" if c in before else "other"
                    groups[kind].append(st)
                    if kind == "band":
                        offsets[before[c]].append(st)
    g = {k: np.concatenate(v) for k, v in groups.items() if v}
    other = g["other"].mean()
    return {"other_mean": float(other), "other_samples": int(g["other"].size),
            "band_by_offset": [float(np.concatenate(v).mean()) for v in offsets.values() if v]} | {
        f"{k}_{q}": v for k in ("tile_boundary", "hole_edge", "band") if k in g
        for q, v in (("mean", float(g[k].mean())), ("ratio", float(g[k].mean() / other)),
                     ("samples", int(g[k].size)), ("percentile", float((g["other"] < g[k].mean()).mean() * 100)))}


def nuclei(images: list[np.ndarray], hole: np.ndarray, rings: int = 4) -> dict:
    """The nuclei (evaluate's segmentation) whose centre lies in ``hole``, over all images: count and mean area,
    and per ring of depth in the hole (``rings`` rings of equal width, from its edge inwards) the density per 10^4
    px and the mean area."""
    from scipy import ndimage as ndi

    from neurodiff.metrics.cells import segment_nuclei
    from neurodiff.metrics.inpainting import _count

    depth = ndi.distance_transform_cdt(hole, metric="chessboard")       # 1 on the hole's edge
    width = -(-int(depth.max()) // rings)
    ring = [hole & (depth > r * width) & (depth <= (r + 1) * width) for r in range(rings)]
    labels = [segment_nuclei(y[None], dims=2) for y in images]
    by_depth = []
    for r, where in enumerate(ring):
        rn, ra = np.sum([_count(lab, where) for lab in labels], axis=0)
        by_depth.append({"depth_px": [r * width + 1, (r + 1) * width], "per_1e4_px": float(1e4 * rn / (where.sum()
                         * len(images))), "mean_area_px": float(ra / max(rn, 1)), "count": int(rn), "area": ra})
    n, area = sum(r["count"] for r in by_depth), sum(r.pop("area") for r in by_depth)   # the rings cover the hole
    return {"count": int(n), "mean_area_px": float(area / max(n, 1)),
            "per_1e4_px": float(1e4 * n / (hole.sum() * len(images))), "by_depth": by_depth}


def training_nuclei(folder: Path) -> dict:
    """Density and mean area of the nuclei of the training images (whole images, evaluate's segmentation)."""
    from neurodiff.metrics.cells import segment_nuclei
    from neurodiff.metrics.inpainting import _count

    files = sorted(p for p in folder.iterdir() if p.is_file() and io.is_image_file(p))
    if not files:
        raise SystemExit(f"--train {folder}: no image files")
    n = area = px = 0
    for f in files:
        y = io.read(f)[0][0]
        c, a = _count(segment_nuclei(y[None], dims=2), np.ones(y.shape, bool))
        n, area, px = n + c, area + a, px + y.size
    return {"images": len(files), "per_1e4_px": 1e4 * n / px, "mean_area_px": area / max(n, 1)}


def independent_tiles(model, image: np.ndarray, hole: np.ndarray, tile: int, overlap: int, **kw) -> np.ndarray:
    """The control: every tile touching the hole filled from the original image alone, pasted where it owns."""
    spans = axis_spans(list(hole.shape), tile, overlap)
    own = [owners(n, tile, overlap) for n in hole.shape]
    out = image.copy()
    for i, sy in enumerate(spans[0]):
        for j, sx in enumerate(spans[1]):
            mine = np.zeros_like(hole)
            mine[np.ix_(own[0] == i, own[1] == j)] = True
            if not (mine & hole).any():
                continue
            y, _ = inpaint_array(model, image[:, sy, sx], hole[sy, sx], tile=0, **kw)
            write = (mine & hole)[sy, sx]
            out[:, sy, sx][:, write] = y[:, write]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("images", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--block", type=int, default=160)
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--overlap", type=int, default=16)
    ap.add_argument("--feathers", default="4,8", help="feathered fills to make, comma-separated px ('' for none)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--jump", type=int, default=5)
    ap.add_argument("--resample", type=int, default=5)
    ap.add_argument("--jump-until", type=float, default=0.5)
    ap.add_argument("--eta", type=float, default=0.0)
    ap.add_argument("--train", type=Path, default=None, help="the training images, to compare densities with")
    ap.add_argument("--limit", type=int, default=None, help="the first N images")
    ap.add_argument("--measure-only", action="store_true", help="measure the fills a run left in OUT")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    model = load_model(a.model)
    kw = dict(steps=a.steps, jump=a.jump, resample=a.resample, jump_until=a.jump_until, eta=a.eta)
    files = sorted(p for p in a.images.iterdir() if p.is_file())[:a.limit]
    feathers = [int(f) for f in a.feathers.split(",") if f.strip()]
    fills = {k: [] for k in ("intact", "untiled", "tiled", *[f"feathered_{f}" for f in feathers], "independent_tiles")}
    times, shape = {k: 0.0 for k in fills}, None
    for n, f in enumerate(files):
        x = io.read(f)[0]
        if x.ndim != 3 or x.shape[0] != 1 or (shape is not None and x.shape != shape):
            raise SystemExit(f"{f}: expected one-channel 2D images of one shape, got {list(x.shape)}")
        shape = x.shape
        hole = np.zeros(x.shape[1:], bool)
        y0, x0 = (x.shape[1] - a.block) // 2, (x.shape[2] - a.block) // 2
        hole[y0:y0 + a.block, x0:x0 + a.block] = True
        fills["intact"].append(x[0])
        tiled = {f"feathered_{f}" if f else "tiled": lambda f=f: inpaint_array(
            model, x, hole, tile=a.tile, overlap=a.overlap, feather=f, seed=n, **kw)[0] for f in [0, *feathers]}
        for name, run in (("untiled", lambda: inpaint_array(model, x, hole, tile=0, seed=n, **kw)[0]), *tiled.items(),
                          ("independent_tiles", lambda: independent_tiles(model, x, hole, a.tile, a.overlap, seed=n,
                                                                          **kw))):
            t = time.perf_counter()
            y = io.read(a.out / f"{f.stem}_{name}.png")[0] if a.measure_only else run()
            times[name] += time.perf_counter() - t
            assert np.array_equal(y[0][~hole], x[0][~hole]), f"{name}: known pixels changed"
            fills[name].append(y[0])
            if not a.measure_only:
                io.write(a.out / f"{f.stem}_{name}.png", y)
        print(f"{f.name}: filled ({', '.join(f'{k} {v:.0f} s' for k, v in times.items() if v)} so far)", flush=True)
    own = owners(shape[1], a.tile, a.overlap)
    assert shape[1] == shape[2], "square images: the tile grid and the hole are the same along both axes"
    lo = (shape[1] - a.block) // 2
    hole = np.zeros(shape[1:], bool)
    hole[lo:lo + a.block, lo:lo + a.block] = True
    res = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()
                        if k not in ("images", "out")} | {"images": len(files)},
           "nuclei_in_hole": {k: nuclei(v, hole) for k, v in fills.items()},
           "nuclei_in_training_images": training_nuclei(a.train) if a.train else None,
           "tile_boundaries": [int(c) for c in np.flatnonzero(np.r_[False, own[1:] != own[:-1]])],
           "seconds": times,
           "measures": {m: {k: seam_ratios(v, lo, lo + a.block, own, m, max(feathers, default=0))
                            for k, v in fills.items()} for m in MEASURES}}
    tmp = a.out / "seams.json.tmp"
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(a.out / "seams.json")
    print(f"tile boundaries at {res['tile_boundaries']} px; hole {a.block}^2 in {len(files)} images")
    print("nuclei in the holes (all images): " + "; ".join(f"{k} {v['count']} of mean area {v['mean_area_px']:.1f} px"
                                                          for k, v in res["nuclei_in_hole"].items()))
    print("nuclei per 10^4 px (mean area, px) in the hole, overall; by depth " + ", ".join(
        f"{r['depth_px'][0]}-{r['depth_px'][1]}" for r in res["nuclei_in_hole"]["intact"]["by_depth"]) + " px:")
    for k, v in res["nuclei_in_hole"].items():
        print(f"  {k}: {v['per_1e4_px']:.1f} ({v['mean_area_px']:.0f}); " + ", ".join(
            f"{r['per_1e4_px']:.1f} ({r['mean_area_px']:.0f})" for r in v["by_depth"]))
    if a.train:
        t = res["nuclei_in_training_images"]
        print(f"  training images ({t['images']}): {t['per_1e4_px']:.1f} ({t['mean_area_px']:.0f})")
    print("| fill | " + " | ".join(f"{m}: tile boundaries / band / hole edges / other lines; band 1, 2, ... px "
                                   "before the boundaries" for m in MEASURES) + " |")
    for k in fills:
        cells = [f"{r['tile_boundary_mean']:.2f} ({r['tile_boundary_ratio']:.2f}) / "
                 + (f"{r['band_mean']:.2f} ({r['band_ratio']:.2f}) / " if "band_mean" in r else "")
                 + f"{r['hole_edge_mean']:.2f} ({r['hole_edge_ratio']:.2f}) / {r['other_mean']:.2f}; "
                 + ", ".join(f"{v:.1f}" for v in r["band_by_offset"]) for r in (res["measures"][m][k] for m in MEASURES)]
        print(f"| {k} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
