"""Figures for the README: VP+DDIM parity with diffusers, sampler accuracy on an analytic Gaussian, and
the demo model's training and sampling speed on this machine.

usage: python bench/core_checks.py            (about a minute on 2 CPU cores; needs the test extra: diffusers)
"""

import time

import torch

from neurodiff.diffusion.denoiser import VP, append_dims, bind
from neurodiff.diffusion.samplers import SAMPLERS, randn_like
from neurodiff.diffusion.schedules import karras, vp_betas, vp_timesteps


def parity(schedule: str, dname: str, steps: int = 50) -> tuple[float, float]:
    from diffusers import DDIMScheduler, DDPMScheduler

    betas_err = (vp_betas(1000, schedule) - DDPMScheduler(beta_schedule=dname).betas.double()).abs().max().item()
    sched = DDIMScheduler(beta_schedule=dname, set_alpha_to_one=True, steps_offset=0, clip_sample=False)
    sched.set_timesteps(steps)
    ab = sched.alphas_cumprod
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def eps(x, t, cond=None):
        a = ab[torch.as_tensor(t).long()].reshape(-1, 1, 1, 1)
        return x * (1 - a).sqrt() / (0.25 * a + 1 - a) + 0.1 * torch.tanh(conv(x))

    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        ref = x.clone()
        for t in sched.timesteps:
            ref = sched.step(eps(ref, t.expand(4)), t, ref).prev_sample
        vp = VP(1000, schedule)
        sig = torch.cat([vp.sigma_table[vp_timesteps(1000, steps)], torch.zeros(1, dtype=torch.float64)])
        out = SAMPLERS["ddim"](bind(eps, vp), x.double() * (1 + sig[0] ** 2).sqrt() / sig[0], sig)
    return betas_err, (out.float() - ref).abs().max().item()


def gaussian_std(name: str, steps: int, dims: int, s: float = 0.7, n: int = 4096) -> float:
    gens = [torch.Generator().manual_seed(k) for k in range(n)]
    noise = randn_like(torch.zeros(n, 1, *([4] * dims)), gens)
    D = lambda x, sigma: x * s ** 2 / (s ** 2 + append_dims(sigma, x.ndim) ** 2)  # noqa: E731
    return SAMPLERS[name](D, noise, karras(steps, 0.002, 80.0), generator=gens).std().item() / s


def demo_speed() -> dict:
    from neurodiff.nn.unet import Cond, UNet

    torch.manual_seed(0)
    net = UNet(dims=2, in_channels=1, channels=32, channel_mult=(1, 2, 2), attn_levels=(2,), num_classes=14)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x, lab = torch.randn(16, 1, 64, 64), torch.arange(16) % 14
    res = {"params": sum(p.numel() for p in net.parameters())}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        times = []
        for i in range(6):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = net(x, torch.zeros(16), Cond(label=lab)).square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t)
        res[f"train_step_{name}_s"] = sorted(times[1:])[len(times[1:]) // 2]
    return res


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for sched, dname in (("linear", "linear"), ("cosine", "squaredcos_cap_v2")):
        b, d = parity(sched, dname)
        print(f"VP {sched:6s}: betas max |diff| vs diffusers {b:.2e}; 50-step DDIM loop max |diff| {d:.2e}")
    print("sampler std / true std on N(0, 0.7^2), 4096 samples (Karras schedule):")
    for name in ("euler", "heun", "dpmpp_2m", "ancestral"):
        row = [f"{gaussian_std(name, st, dims):.4f}" for st in (32, 128, 512) for dims in (2, 3)]
        print(f"  {name:9s} steps 32/128/512 x 2D/3D: {' '.join(row)}")
    print("demo UNet (16 x 1 x 64 x 64, forward+backward+AdamW):", demo_speed())
