"""Sampling speed and quality against the number of network evaluations (NFE), per sampler.

On a trained model (default: the demo weights that ship with neurodiff, a depth-conditional model of the
MNI152 T1 template's axial slices), draws the same seeds at NFE 10, 20, 35, 50 and 100 with every sampler,
plus a 1000-step ancestral reference, and scores each set against the real slices with KID and FD in the
feature space of a network trained on those slices (the evaluation issue's default, no download).

    python bench/sample.py --out bench/results/sample            # table.md, results.jsonl, kid_vs_nfe.svg
    python bench/sample.py --n 28 --nfe 10 --samplers euler --ref-steps 50 --out /tmp/s   # a smoke run

NFE counts denoiser calls; with classifier-free guidance each call runs the network on a doubled batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from neurodiff import config as config_mod
from neurodiff.data.datasets import ImageDataset
from neurodiff.data.normalize import Normalizer
from neurodiff.demo import WEIGHTS, mni_template_path
from neurodiff.diffusion.samplers import nfe as count_nfe
from neurodiff.metrics.distances import frechet_distance, kid
from neurodiff.metrics.features import load_features, train_features
from neurodiff.tasks.generate import sample_batch, sample_seed
from neurodiff.train.state import load_model

SAMPLERS = ["euler", "heun", "dpmpp_2m", "ancestral"]


def steps_for(sampler: str, nfe: int) -> int:
    """Steps whose NFE is closest to ``nfe`` without exceeding it (Heun: 2 calls per step but the last)."""
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def real_slices(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    data = cfg.data
    data.path = str(mni_template_path())
    ds = ImageDataset(data)
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([it["x"] for it in items]), torch.stack([it["label"] for it in items])


def line_plot_svg(series: dict[str, list[tuple[float, float]]], ref: float, path: Path, ylabel: str) -> None:
    """A small log-x line plot as SVG (no plotting dependency)."""
    import math

    w, h, m = 560, 340, 55
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts] + [ref]
    x0, x1 = math.log10(min(xs)), math.log10(max(xs))
    y0, y1 = min(ys), max(ys)
    y0, y1 = y0 - 0.05 * (y1 - y0 + 1e-9), y1 + 0.05 * (y1 - y0 + 1e-9)

    def px(x):
        return m + (math.log10(x) - x0) / (x1 - x0 + 1e-12) * (w - 2 * m)

    def py(y):
        return h - m - (y - y0) / (y1 - y0) * (h - 2 * m)

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">NFE (log scale)</text>',
             f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">{ylabel}</text>',
             f'<line x1="{m}" y1="{py(ref):.1f}" x2="{w - m}" y2="{py(ref):.1f}" stroke="gray" '
             f'stroke-dasharray="5,4"/><text x="{w - m}" y="{py(ref) - 5:.1f}" text-anchor="end" fill="gray">'
             f'1000-step ancestral</text>']
    for x in sorted({x for x in xs}):
        parts.append(f'<text x="{px(x):.1f}" y="{h - m + 16}" text-anchor="middle">{x:g}</text>')
    for frac in (0, 0.5, 1):
        y = y0 + frac * (y1 - y0)
        parts.append(f'<text x="{m - 5}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
    for i, (name, pts) in enumerate(series.items()):
        c = colors[i % len(colors)]
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(pts))
        parts.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        parts.append(f'<text x="{m + 10}" y="{m + 15 * (i + 1)}" fill="{c}">{name}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(WEIGHTS), help="run or exported model folder (default: the demo weights)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=140, help="samples per setting (cycled over the depths)")
    ap.add_argument("--nfe", type=int, nargs="*", default=[10, 20, 35, 50, 100])
    ap.add_argument("--samplers", nargs="*", default=SAMPLERS)
    ap.add_argument("--ref-steps", type=int, default=1000)
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's sample.guidance")
    ap.add_argument("--batch", type=int, default=70)
    ap.add_argument("--features", default=None, help="a feature network; default: train one on the real slices")
    ap.add_argument("--feature-steps", type=int, default=300)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    cfg = model.cfg
    guidance = cfg.sample.guidance if args.guidance is None else args.guidance
    real, real_labels = real_slices(config_mod.load("demo", []))
    feat_path = args.features or out / "features.safetensors"
    if not Path(feat_path).is_file():
        normalizer = Normalizer(**cfg.data.meta["normalizer"])    # the model's own
        train_features(real, real_labels, normalizer, feat_path, steps=args.feature_steps, progress=False)
    feats = load_features(feat_path)
    f_real = feats(real)
    bins = cfg.data.depth_bins or 1
    labels = [k % bins for k in range(args.n)] if cfg.model.num_classes else None
    seeds = [sample_seed(0, k) for k in range(args.n)]
    torch.set_grad_enabled(False)

    def run(sampler: str, steps: int) -> dict:
        t0 = time.perf_counter()
        xs = [sample_batch(model.net, cfg, seeds[i:i + args.batch],
                           None if labels is None else labels[i:i + args.batch], None, guidance, steps, sampler,
                           exact=False) for i in range(0, args.n, args.batch)]
        seconds = time.perf_counter() - t0
        f = feats(torch.cat(xs))
        k_mean, k_sd = kid(f_real, f)
        row = {"sampler": sampler, "steps": steps, "nfe": count_nfe(sampler, steps), "n": args.n,
               "guidance": guidance, "s_per_sample": seconds / args.n, "kid": k_mean, "kid_sd": k_sd,
               "fd": frechet_distance(f_real, f)}
        print(json.dumps(row), flush=True)
        return row

    rows = [run("ancestral", args.ref_steps)]
    ref = rows[0]
    for sampler in args.samplers:
        for n in args.nfe:
            rows.append(run(sampler, steps_for(sampler, n)))
    with open(out / "results.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    lines = [f"Model {args.model} (digest {model.digest}), {args.n} samples per setting, guidance {guidance}, "
             f"{len(real)} real slices; KID x 1000 (mean ± sd over random subsets of the real set), FD in the trained feature space.", "",
             "| sampler | steps | NFE | s / sample | KID x1e3 | FD | KID vs reference |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        rel = (r["kid"] - ref["kid"]) / abs(ref["kid"]) if ref["kid"] else float("nan")
        lines.append(f"| {r['sampler']}{' (reference)' if r is ref else ''} | {r['steps']} | {r['nfe']} | "
                     f"{r['s_per_sample']:.3f} | {1e3 * r['kid']:.2f} ± {1e3 * r['kid_sd']:.2f} | {r['fd']:.2f} | "
                     f"{'' if r is ref else f'{rel:+.0%}'} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    series = {s: [(r["nfe"], 1e3 * r["kid"]) for r in rows[1:] if r["sampler"] == s] for s in args.samplers}
    line_plot_svg(series, 1e3 * ref["kid"], out / "kid_vs_nfe.svg", "KID x 1000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
