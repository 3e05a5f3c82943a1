"""Is a cheaper RePaint schedule within 10 % of the classic one's errors? A paired comparison with its uncertainty.

    python bench/inpaint_paired.py bench/results/inpaint_ihc bench/results/inpaint_ihc_fp32 [--ref 250_10_10]

Every eval_* folder of every results folder (one folder per model) repaints the same masks with the same seeds,
so the cheaper schedule's errors can be paired mask by mask with the reference schedule's (default 250/10/10,
2410 calls) of the same model. For each error (density and mean size, in mask and over the whole patch) it
prints, over all paired masks of all models, the median error of each schedule, their ratio (cheap / reference)
and a 95 % bootstrap interval of that ratio (masks resampled with their pairs kept, 10,000 draws, seed 0).
The last column scales the interval's half-width as 1/sqrt(masks) to the number of paired masks an interval of
+-0.10 would need (a rough guide to what a decision costs). Verdict: "within 10 %" when the whole interval lies at or below 1.10 (at most 10 % worse), "worse" when it lies
above 1.10, "undecided" otherwise. TAG'd folders (eval_100_10_10_t64, ...) are skipped unless --tags names them
(e.g. --tags until0.5_eta0: settings of --jump-until and --eta); the reference is always an untagged folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from inpaint_table import load_runs  # noqa: E402

ERRORS = (("density_rel_err", "density, in mask"), ("mean_size_rel_err", "size, in mask"),
          ("patch_density_rel_err", "density, whole patch"), ("patch_mean_size_rel_err", "size, whole patch"))


def load(root: Path, tags: tuple[str, ...] = ()) -> dict[str, dict]:
    """{"250_10_10": {(file, bin, mask fraction): row}} of one results folder (one model); a TAG'd folder named
    in ``tags`` as "50_5_5 (TAG)". A run cut off before its last image (evaluate writes metrics.json after every
    image) gives the masks it finished: they pair like any other."""
    runs = {}
    for m in load_runs(root):            # a cut-off run counts with the images it finished
        tag = m["folder_tag"]
        if not tag or tag[2:-1] in tags:
            runs[m["schedule"] + tag] = {(r["file"], r["bin"], round(r["mask_fraction"], 6)): r for r in m["per_image"]}
            runs[m["schedule"] + tag]["calls"] = m["network_calls_per_tile"]
    return runs


BIG = 1e12   # stands for an infinite ratio (the reference's median error 0) inside the percentiles


def ratio_ci(cheap: np.ndarray, ref: np.ndarray, draws: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """median(cheap) / median(ref) and its 95 % paired-bootstrap interval."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ref), (draws, len(ref)))
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.median(cheap[idx], axis=1) / np.median(ref[idx], axis=1)
    lo, hi = np.nanpercentile(np.where(np.isinf(boot), BIG, boot), [2.5, 97.5])  # x/0: unbounded, not NaN
    lo, hi = (np.inf if v >= BIG else float(v) for v in (lo, hi))
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.median(cheap) / np.median(ref)), lo, hi


def verdict(lo: float, hi: float, tol: float = 1.10) -> str:
    return "within 10 %" if hi <= tol else "worse" if lo > tol else "undecided"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", type=Path, help="results folders of inpaint_ihc.sh, one per model")
    ap.add_argument("--ref", default="250_10_10", help="reference schedule steps_jump_resample (default 250_10_10)")
    ap.add_argument("--tags", nargs="*", default=[], help="TAG'd eval folders to compare too (e.g. until0.5_eta0)")
    args = ap.parse_args()
    models = [(root, load(root, tuple(args.tags))) for root in args.roots]
    models = [(root, runs) for root, runs in models if args.ref in runs]
    if not models:
        raise SystemExit(f"no results folder among {[str(r) for r in args.roots]} has eval_{args.ref}/metrics.json")
    cheap_names = sorted({n for _, runs in models for n in runs if n != args.ref},
                         key=lambda n: -max(runs[n]["calls"] for _, runs in models if n in runs))
    print(f"reference {args.ref.replace('_', '/')}; models: {', '.join(str(r) for r, _ in models)}")
    print("| schedule | network calls | paired masks | error | median, schedule | median, reference | ratio (95 % interval) "
          "| verdict | masks for +-0.10 |")
    print("|---" * 9 + "|")
    for name in cheap_names:
        pairs = [(runs[name][k], runs[args.ref][k]) for _, runs in models if name in runs
                 for k in runs[name] if k != "calls" and k in runs[args.ref]]
        calls = next(runs[name]["calls"] for _, runs in models if name in runs)
        for key, label in ERRORS:
            c = np.array([a[key] for a, b in pairs if np.isfinite(a[key]) and np.isfinite(b[key])])
            r = np.array([b[key] for a, b in pairs if np.isfinite(a[key]) and np.isfinite(b[key])])
            if len(c) < 2:
                continue
            ratio, lo, hi = ratio_ci(c, r)
            sched, _, tag = name.partition(" ")
            print(f"| {sched.replace('_', ' / ')}{' ' + tag if tag else ''} | {calls} | {len(c)} | {label} | {100 * np.median(c):.0f} % | "
                  f"{100 * np.median(r):.0f} % | {ratio:.2f} ({lo:.2f}–{hi:.2f}) | {verdict(lo, hi)} | "
                  f"{int(np.ceil(len(c) * ((hi - lo) / 2 / 0.10) ** 2)) if np.isfinite(hi) else '–'} |")


if __name__ == "__main__":
    main()
