"""Time of one network call (the unit of RePaint's cost) in float32 and in bf16 autocast, per batch size.

    python bench/net_call.py MODEL [--size 128] [--batch 1 4] [--repeats 10]

MODEL: a run or exported model folder (default: the demo weights that ship with neurodiff). Prints one line
per precision and batch: milliseconds per call and per image, after one warm-up call. bf16 is timed even where
the CPU would emulate it (neurodiff itself then falls back to float32).
"""

from __future__ import annotations

import argparse
import time

import torch

from neurodiff.demo import WEIGHTS
from neurodiff.precision import autocast, cpu_has_bf16
from neurodiff.train.state import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=str(WEIGHTS))
    ap.add_argument("--size", type=int, default=128, help="tile side in pixels (voxels for a 3D model)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    model = load_model(args.model)
    net, m = model.net.eval(), model.cfg.model
    print(f"{args.model}: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters, "
          f"{torch.get_num_threads()} threads, {args.size}^{m.dims} tiles; CPU {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16: {cpu_has_bf16()}")
    for precision in ("fp32", "bf16"):
        for b in args.batch:
            x = torch.randn(b, m.in_channels, *[args.size] * m.dims)
            c_noise = torch.zeros(b)
            with torch.no_grad(), autocast(precision, "cpu"):
                net(x, c_noise)
                t = time.perf_counter()
                for _ in range(args.repeats):
                    net(x, c_noise)
            dt = (time.perf_counter() - t) / args.repeats
            print(f"{precision} batch {b}: {dt * 1e3:.1f} ms per call, {dt / b * 1e3:.1f} ms per image")


if __name__ == "__main__":
    main()
