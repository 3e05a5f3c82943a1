"""Training-step speed: neurodiff's UNet against MONAI's DiffusionModelUNet and diffusers' UNet2DModel.

One process builds the three networks at the same parameter count (within 2 %) for the same input, then
times forward + backward + AdamW step for each in turn (alternating, after warm-up) and reports the median.

    python bench/train_step.py                 # all cases, a table
    python bench/train_step.py --quick --json  # the first 2D case only, one JSON object per case

What is compared (bench/NOTES.md has the reasoning and the measurements):
- neurodiff's UNet in the layout it recommends: the width doubles at every level (1, 2, 4, 8), one residual
  block on the two finest levels and two below, attention only on grids of at most 512 positions (16x16,
  8x8x8), channels-last. Parameters sit where the grid is small, so they cost few FLOPs.
- The peers keep their libraries' defaults for what a user would not change: two residual blocks per level,
  MONAI's width ratios (1, 2, 2, 2, ...) and diffusers' (1, 2, 3, 4, ...). They get the same number of
  levels and attention at the same resolutions as neurodiff, GroupNorm with 8 groups like neurodiff (so
  widths can be matched in steps of 8), and their base width scaled until the parameter count matches.
- Same input, same loss, same optimizer (torch AdamW), same precision: fp32 on a CPU, bf16 autocast on a GPU
  (``--precision`` overrides it for all networks alike).

MONAI and diffusers come from the ``bench`` extra (pip install -e ".[bench]"); neurodiff never needs them.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from neurodiff.nn.unet import UNet

# name, dims, input shape, neurodiff UNet kwargs (attention levels = grids of <= 512 positions)
CASES = [
    ("2d-64", 2, (8, 1, 64, 64), dict(channels=24, channel_mult=(1, 2, 4, 8), num_res_blocks=(1, 1, 2, 2),
                                      attn_levels=(2, 3))),
    ("2d-128", 2, (8, 1, 128, 128), dict(channels=24, channel_mult=(1, 1, 2, 4, 8),
                                         num_res_blocks=(1, 1, 1, 2, 2), attn_levels=(3, 4))),
    ("3d-32", 3, (2, 1, 32, 32, 32), dict(channels=16, channel_mult=(1, 2, 4, 8), num_res_blocks=(1, 1, 2, 2),
                                          attn_levels=(2, 3))),
    ("3d-64", 3, (2, 1, 64, 64, 64), dict(channels=16, channel_mult=(1, 2, 4, 8), num_res_blocks=(1, 1, 2, 2),
                                          attn_levels=(3,))),
]
HEADS = 4


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def neurodiff_net(dims: int, kw: dict) -> torch.nn.Module:
    return UNet(dims=dims, in_channels=1, num_heads=HEADS, groups=8, **kw)


def monai_net(dims: int, widths: list[int], attn: list[bool]) -> torch.nn.Module:
    from monai.networks.nets import DiffusionModelUNet
    return DiffusionModelUNet(spatial_dims=dims, in_channels=1, out_channels=1, num_res_blocks=2, channels=widths,
                              attention_levels=attn, norm_num_groups=8,
                              num_head_channels=[max(8, w // HEADS) for w in widths])


def diffusers_net(dims: int, widths: list[int], attn: list[bool]) -> torch.nn.Module:
    from diffusers import UNet2DModel
    return UNet2DModel(in_channels=1, out_channels=1, block_out_channels=tuple(widths), layers_per_block=2,
                       down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
                       up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
                       attention_head_dim=max(8, widths[-1] // HEADS), norm_num_groups=8)


def match_widths(build, ratios: list[float], target: int, tol: float = 0.02) -> tuple[list[int], int]:
    """Widths (multiples of 8) in the given ratios whose parameter count is within ``tol`` of ``target``."""
    def params(widths):
        with torch.device("meta"):
            return count(build(widths))

    best = None
    for base in range(8, 1025, 8):
        widths = [max(8, round(base * r / 8) * 8) for r in ratios]
        p = params(widths)
        if best is None or abs(p - target) < abs(best[1] - target):
            best = (widths, p)
        if p > target * 1.5:
            break
    widths, p = best
    # fine steps: greedily move one level's width by 8 while that brings the count closer
    while abs(p - target) > tol * target:
        options = []
        for i in range(len(widths)):
            for d in (-8, 8):
                w = list(widths)
                w[i] += d
                if w[i] >= 8:
                    options.append((abs(params(w) - target), w))
        score, w = min(options)
        if score >= abs(p - target):
            break
        widths, p = w, params(w)
    if abs(p - target) > tol * target:
        raise RuntimeError(f"could not match {target} parameters within {tol:.0%} (best {p})")
    return widths, p


def step_fn(net, kind: str, x: torch.Tensor, t: torch.Tensor, precision: str):
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    target = torch.randn_like(x)
    device = x.device

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            if kind == "neurodiff":
                out = net(x, t)
            elif kind == "monai":
                out = net(x, timesteps=t)
            else:
                out = net(x, t).sample
        loss = (out.float() - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return step


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({cpu}, {torch.get_num_threads()} threads)"


def run_case(name, dims, shape, kw, device, precision, warmup, reps, peers) -> dict:
    torch.manual_seed(0)
    nd = neurodiff_net(dims, kw)
    target = count(nd)
    levels = len(kw["channel_mult"])
    attn = [i in kw["attn_levels"] for i in range(levels)]
    nets = {"neurodiff": nd}
    info = {"case": name, "input": list(shape), "params": target, "neurodiff_widths": [kw["channels"] * m for m in kw["channel_mult"]]}
    if "monai" in peers:
        ratios = [1.0] + [2.0] * (levels - 1)
        widths, p = match_widths(lambda w: monai_net(dims, w, attn), ratios, target)
        nets["monai"] = monai_net(dims, widths, attn)
        info.update(monai_params=p, monai_widths=widths)
    if "diffusers" in peers and dims == 2:
        ratios = [float(min(i + 1, 4)) for i in range(levels)]
        widths, p = match_widths(lambda w: diffusers_net(dims, w, attn), ratios, target)
        nets["diffusers"] = diffusers_net(dims, widths, attn)
        info.update(diffusers_params=p, diffusers_widths=widths)
    x = torch.randn(shape, device=device)
    t = torch.rand(shape[0], device=device) * 0.9 + 0.05
    steps = {}
    for kind, net in nets.items():
        net.to(device).train()
        # MONAI and diffusers take integer-like timesteps in [0, 1000); neurodiff takes c_noise
        steps[kind] = step_fn(net, kind, x, t if kind == "neurodiff" else (t * 999).round(), precision)
    times = {k: [] for k in steps}
    for r in range(warmup + reps):
        for kind, step in steps.items():       # alternate, so drifting machine load hits all alike
            t0 = time.perf_counter()
            step()
            if r >= warmup:
                times[kind].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {**info, "neurodiff_s": med["neurodiff"], "monai_s": med.get("monai"),
            "diffusers_s": med.get("diffusers"), "precision": precision, "device": device_name(device),
            "reps": reps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the first 2D case (under a minute on a CPU)")
    ap.add_argument("--json", action="store_true", help="one JSON object per case on stdout")
    ap.add_argument("--cases", nargs="*", help=f"case names (default all): {[c[0] for c in CASES]}")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="auto: bf16 autocast on a GPU, fp32 on a CPU (the same for every network)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--peers", nargs="*", default=["monai", "diffusers"])
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    cases = CASES[:1] if args.quick else [c for c in CASES if not args.cases or c[0] in args.cases]
    rows = []
    for name, dims, shape, kw in cases:
        row = run_case(name, dims, shape, kw, device, precision, args.warmup, args.reps, args.peers)
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    out = sys.stderr if args.json else sys.stdout
    print(f"\n{rows[0]['device']}, {precision}, median of {args.reps} after {args.warmup} warm-up steps", file=out)
    print(f"{'case':8} {'input':18} {'params':>9} {'neurodiff s':>12} {'MONAI s':>9} {'diffusers s':>12} "
          f"{'x MONAI':>8} {'x diffusers':>12}", file=out)
    for r in rows:
        def fmt(v, spec):
            return format(v, spec) if v is not None else "-"
        xm = r["monai_s"] / r["neurodiff_s"] if r["monai_s"] else None
        xd = r["diffusers_s"] / r["neurodiff_s"] if r["diffusers_s"] else None
        print(f"{r['case']:8} {'x'.join(map(str, r['input'])):18} {r['params']:>9} {r['neurodiff_s']:>12.3f} "
              f"{fmt(r['monai_s'], '.3f'):>9} {fmt(r['diffusers_s'], '.3f'):>12} {fmt(xm, '.2f'):>8} "
              f"{fmt(xd, '.2f'):>12}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
