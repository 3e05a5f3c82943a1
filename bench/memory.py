"""Peak memory of one 3D training step (batch 1) at 64^3 and 128^3, with and without gradient checkpointing.

Each setting runs in a fresh process: build the 3D UNet of bench/train_step.py's 3D cases, take two training
steps (forward + backward + AdamW), report the process's peak resident memory (CPU) or the peak CUDA memory
allocated (GPU), and the time of the second step.

    python bench/memory.py                      # CPU: bf16 autocast, checkpointing off/on, 64^3 and 128^3
    python bench/memory.py --device cuda        # on a GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

LAYOUT = dict(channels=16, channel_mult=(1, 2, 4, 8), num_res_blocks=(1, 1, 2, 2), attn_levels=(3,))


def child(size: int, checkpointing: bool, precision: str, device: str) -> dict:
    import torch

    from neurodiff.nn.unet import UNet

    dev = torch.device(device)
    net = UNet(dims=3, in_channels=1, groups=8, checkpointing=checkpointing, **LAYOUT).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(1, 1, size, size, size, device=dev)
    t = torch.full((1,), 0.3, device=dev)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = net(x, t)
        loss = (out.float() - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    row = {"size": size, "checkpointing": checkpointing, "precision": precision, "device": device,
           "params": sum(p.numel() for p in net.parameters()), "step_s": times[-1],
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_before_step_mib": rss_model}
    if dev.type == "cuda":
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 128])
    ap.add_argument("--precision", nargs="*", default=["bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        size, ckpt, precision, device = args.child
        print(json.dumps(child(int(size), ckpt == "1", precision, device)))
        return 0
    rows = []
    for size in args.sizes:
        for precision in args.precision:
            for ckpt in ("0", "1"):
                r = subprocess.run([sys.executable, __file__, "--child", str(size), ckpt, precision, args.device],
                                   capture_output=True, text=True)
                if r.returncode:
                    print(r.stderr[-2000:], file=sys.stderr)
                    return 1
                row = json.loads(r.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
    key = "peak_cuda_mib" if args.device.startswith("cuda") else "peak_rss_mib"
    print(f"\n| input | precision | checkpointing | step s | peak {'CUDA' if 'cuda' in key else 'RSS'} MiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| 1x1x{r['size']}^3 | {r['precision']} | {'on' if r['checkpointing'] else 'off'} | "
              f"{r['step_s']:.1f} | {r[key]:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
