"""Does neurodiff's faster layout cost quality? Train it and the equal-size MONAI network side by side.

Both networks get the same EDM preconditioning and loss (neurodiff's), the same batches, noise levels and
noise, the same optimizer and learning rate, bf16 autocast, alternating step by step in one process. Every
``--eval-every`` steps both are scored on held-out slices: the EDM-weighted denoising loss at 8 fixed noise
levels (0.02 .. 20) with fixed noise, i.e. the training objective on data the nets never saw.

Data: axial slices of the MNI152 T1 template (ships with nilearn) at 64x64, the demo's preprocessing;
every 8th slice is held out.

    python bench/quality_per_time.py --lr 2e-4 --steps 200 --peers diffusers --out bench/results/quality_layout.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_step import CASES, diffusers_net, match_widths, monai_net, neurodiff_net  # noqa: E402

from neurodiff import config as config_mod  # noqa: E402
from neurodiff.data.datasets import ImageDataset  # noqa: E402
from neurodiff.demo import mni_template_path  # noqa: E402
from neurodiff.diffusion.denoiser import EDM  # noqa: E402
from neurodiff.diffusion.losses import denoising_loss, sample_sigma  # noqa: E402


class PeerAsNeurodiff(torch.nn.Module):
    """A peer's UNet behind neurodiff's net signature: the same c_noise goes to its timestep embedding."""

    def __init__(self, net, kind: str):
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x, c_noise, cond=None):
        if self.kind == "monai":
            return self.net(x, timesteps=c_noise)
        return self.net(x, c_noise).sample


def slices() -> tuple[torch.Tensor, torch.Tensor]:
    cfg = config_mod.load("demo", [])
    cfg.data.path = str(mni_template_path())
    ds = ImageDataset(cfg.data)
    x = torch.stack([ds[i]["x"] for i in range(len(ds))])
    held = torch.arange(len(x)) % 8 == 0
    return x[~held], x[held]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--zero-init", action="store_true",
                    help="neurodiff with model.zero_init (ADM's zero-initialised residual branches and output)")
    ap.add_argument("--layout", type=json.loads, default={},
                    help='neurodiff UNet kwargs replacing the 2d-64 case\'s, e.g. \'{"channels": 40, '
                         '"channel_mult": [1, 2, 3, 4], "num_res_blocks": 2}\'')
    ap.add_argument("--peers", nargs="*", default=["monai", "diffusers"])
    ap.add_argument("--out", default=None, help="JSON lines of the evaluations")
    args = ap.parse_args(argv)
    train_x, val_x = slices()
    name, dims, shape, kw = CASES[0]
    kw = {**kw, **args.layout}
    torch.manual_seed(0)
    nd = neurodiff_net(dims, {**kw, "zero_init": args.zero_init})
    target = sum(p.numel() for p in nd.parameters())
    attn = [i in kw["attn_levels"] for i in range(len(kw["channel_mult"]))]
    nets = {"neurodiff": nd}
    sizes = f"neurodiff {target} {[kw['channels'] * m for m in kw['channel_mult']]}"
    for kind, build, ratios in (("monai", monai_net, [1.0, 2.0, 2.0, 2.0]),
                                ("diffusers", diffusers_net, [1.0, 2.0, 3.0, 4.0])):
        if kind in args.peers:
            widths, p = match_widths(lambda w: build(dims, w, attn), ratios, target)
            torch.manual_seed(0)
            nets[kind] = PeerAsNeurodiff(build(dims, widths, attn), kind)
            sizes += f", {kind} {p} {widths}"
    print(f"{len(train_x)} training / {len(val_x)} held-out slices; params {sizes}", flush=True)
    precond = EDM(sigma_data=0.5)
    opts = {k: torch.optim.AdamW(n.parameters(), lr=args.lr) for k, n in nets.items()}
    spent = {k: 0.0 for k in nets}
    g = torch.Generator().manual_seed(1)
    val_sigma = torch.logspace(-1.7, 1.3, 8)
    val_noise = torch.randn(len(val_sigma), *val_x.shape, generator=torch.Generator().manual_seed(2))
    out = open(args.out, "w") if args.out else None

    def evaluate(step):
        row = {"step": step}
        for k, net in nets.items():
            net.eval()
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
                losses = [denoising_loss(net, precond, val_x, s.expand(len(val_x)), val_noise[i]).item()
                          for i, s in enumerate(val_sigma)]
            net.train()
            row[f"{k}_val"] = sum(losses) / len(losses)
            row[f"{k}_per_sigma"] = [round(v, 4) for v in losses]
            row[f"{k}_s"] = spent[k]
        print(json.dumps(row), flush=True)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()
        return row

    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(train_x), (args.batch,), generator=g)
        x0 = train_x[idx]
        sigma = sample_sigma(precond, args.batch, g)
        noise = torch.randn(x0.shape, generator=g)
        lr = args.lr * min(1.0, step / 100)
        for k, net in nets.items():
            for group in opts[k].param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            with torch.autocast("cpu", torch.bfloat16):
                loss = denoising_loss(net, precond, x0, sigma, noise)
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
            spent[k] += time.perf_counter() - t0
        if step % args.eval_every == 0 or step == args.steps:
            evaluate(step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
