"""Samplers: pure functions ``sample(denoise, noise, sigmas, *, generator=None, callback=None) -> x``.

``noise`` is unit-variance; it is scaled by sigmas[0]. ``sigmas`` is float64 and ends in 0. Steps run in
float64. ``generator`` is a list with one torch.Generator per sample, so sample k does not depend on the
batch it is in. DDIM with eta=0 is the Euler step of the probability-flow ODE (Karras et al. 2022, Sec. 3).
"""

from __future__ import annotations

import torch


def randn_like(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Per-sample noise: row k is drawn from generator[k] (CPU generators, moved to x's device)."""
    if generator is None:
        return torch.randn_like(x)
    gens = generator if isinstance(generator, (list, tuple)) else [generator] * x.shape[0]
    rows = [torch.randn(x.shape[1:], generator=g, dtype=torch.float32, device=g.device) for g in gens]
    return torch.stack(rows).to(device=x.device, dtype=x.dtype)


def _D(denoise, x, sigma):
    return denoise(x, x.new_full((x.shape[0],), float(sigma))).to(torch.float64)


def euler(denoise, noise, sigmas, *, generator=None, callback=None):
    """Euler steps of dx/dsigma = (x - D(x)) / sigma; with VP sigmas this equals DDIM (eta = 0)."""
    x = noise.to(torch.float64) * sigmas[0]
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = _D(denoise, x, s)
        x = x0 + (s_next / s) * (x - x0)
        if callback:
            callback(i, x, x0)
    return x


def heun(denoise, noise, sigmas, *, generator=None, callback=None):
    """EDM Algorithm 1 (deterministic 2nd order Heun; Euler on the last step to sigma = 0)."""
    x = noise.to(torch.float64) * sigmas[0]
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = _D(denoise, x, s)
        d = (x - x0) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:
            d2 = (x_next - _D(denoise, x_next, s_next)) / s_next
            x_next = x + (s_next - s) * (d + d2) / 2
        x = x_next
        if callback:
            callback(i, x, x0)
    return x


def dpmpp_2m(denoise, noise, sigmas, *, generator=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in lambda = -log sigma, multistep on the x0 estimates."""
    x = noise.to(torch.float64) * sigmas[0]
    x0_prev, h_prev = None, None
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = _D(denoise, x, s)
        if s_next == 0:
            x = x0
        else:
            h = (s / s_next).log()
            if x0_prev is None:  # first step: first order (DPM-Solver++ 1 = DDIM)
                d = x0
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x = (s_next / s) * x - torch.expm1(-h) * d
            x0_prev, h_prev = x0, h
        if callback:
            callback(i, x, x0)
    return x


def ancestral_step(x, x0, s, s_next, noise, eta: float = 1.0):
    """One ancestral step from sigma ``s`` to ``s_next`` > 0: deterministic down to sigma_down, fresh noise up."""
    # VP-consistent split of sigma_next into deterministic and fresh-noise parts
    a, a_next = 1 / (1 + s ** 2), 1 / (1 + s_next ** 2)        # alphabar in VP terms
    var_vp = eta ** 2 * (1 - a_next) / (1 - a) * (1 - a / a_next)
    sigma_up = (var_vp / a_next).clamp(min=0).sqrt().clamp(max=s_next)
    sigma_down = (s_next ** 2 - sigma_up ** 2).sqrt()
    return x0 + (sigma_down / s) * (x - x0) + sigma_up * noise


def ancestral(denoise, noise, sigmas, *, generator=None, callback=None, eta: float = 1.0):
    """Ancestral sampling: an Euler step down to sigma_down, then fresh noise up to sigma_next (DDPM-like)."""
    x = noise.to(torch.float64) * sigmas[0]
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = _D(denoise, x, s)
        x = x0 if s_next == 0 else ancestral_step(x, x0, s, s_next, randn_like(x, generator), eta)
        if callback:
            callback(i, x, x0)
    return x


SAMPLERS = {"euler": euler, "ddim": euler, "heun": heun, "dpmpp_2m": dpmpp_2m, "ancestral": ancestral}


def get_sampler(name: str):
    from neurodiff.errors import NeurodiffError

    if name not in SAMPLERS:
        raise NeurodiffError(f"sampler '{name}': expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def nfe(name: str, steps: int) -> int:
    """Network calls for ``steps`` steps (Heun evaluates twice except on the last step)."""
    return 2 * steps - 1 if name == "heun" else steps
