"""Time and peak memory to sample one full-size volume (seed 001: 160x224x160) with the ldm-3d and ae-3d presets:
50 DDIM steps on the 20x28x20x3 latent (one covariate, CFG off), then the decode in slabs.

  python bench/ldm_memory.py [--slab 8] [--halo 8] [--steps 50] [--device cpu] [--compare]

--compare (after the figures are taken) also decodes the whole volume at once and reports the largest deviation
of the slab decode from it, relative to the volume's value range: 0 up to float rounding when the halo covers the
decoder's receptive field (8 latent voxels), small seams below that.

Weights are random: time and memory do not depend on training. Peak memory is the process's maximum resident set
(ru_maxrss) on the CPU, torch.cuda.max_memory_allocated on a GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from neurodiff import config
from neurodiff.codec import KLCodec
from neurodiff.nn.autoencoder import build_autoencoder
from neurodiff.nn.unet import build_unet
from neurodiff.tasks.generate import sample_batch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--slab", type=int, default=8, help="latent slab thickness for the decode (0 = whole volume)")
    p.add_argument("--halo", type=int, default=8, help="latent voxels decoded either side of a slab, then cut off")
    p.add_argument("--compare", action="store_true", help="also decode whole and report the slab decode's deviation")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.manual_seed(0)
    ae_cfg = config.load("ae-3d")
    cfg = config.load("ldm-3d")
    ae = build_autoencoder(ae_cfg.autoencoder, 1).to(a.device).eval()
    f = ae.factor
    latent = [ae.z_channels, *(s // f for s in cfg.data.size)]
    cfg.model.in_channels, cfg.model.out_channels, cfg.model.num_scalars = ae.z_channels, ae.z_channels, 1
    cfg.data.meta = {"shape": latent, "covariates": ["brain_volume_ml"]}
    net = build_unet(cfg.model).to(a.device).eval()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    z = sample_batch(net, cfg, [0], [None], [[0.0]], guidance=1.0, steps=a.steps, sampler="ddim", device=a.device)
    t1 = time.perf_counter()
    x = KLCodec(ae, slab=a.slab, halo=a.halo).decode(z.to(a.device))
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if a.device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    res = {"device": a.device, "threads": torch.get_num_threads(), "volume": list(x.shape[2:]), "latent": latent,
           "unet_params": sum(q.numel() for q in net.parameters()), "ae_params": sum(q.numel() for q in ae.parameters()),
           "steps": a.steps, "slab": a.slab, "halo": a.halo, "sampling_s": round(t1 - t0, 1), "decode_s": round(t2 - t1, 1),
           "total_s": round(t2 - t0, 1), "peak_mib": round(peak), "rss_before_mib": round(rss0)}
    if a.compare:
        with torch.no_grad():
            whole = KLCodec(ae).decode(z.to(a.device))
        res["max_rel_deviation_from_whole_decode"] = float((x - whole).abs().max() / (whole.max() - whole.min()))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
