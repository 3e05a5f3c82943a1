"""Noise schedules: VP betas, sigma schedules for sampling (ending in 0), and sigma densities for training.

All sigmas are in the variance-exploding view: x = x0 + sigma * eps. A discrete VP model with cumulative
alphas a_t has sigma_t = sqrt((1 - a_t) / a_t) (Karras et al. 2022, Table 1).
"""

from __future__ import annotations

import math

import torch


def vp_betas(T: int, schedule: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """[T] float64 betas: 'linear' (Ho et al. 2020) or 'cosine' (Nichol & Dhariwal 2021, eq. 17, clipped 0.999)."""
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if schedule == "cosine":
        s = 0.008
        f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        return torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], dtype=torch.float64)
    raise ValueError(f"unknown beta schedule {schedule!r}")


def vp_sigmas(betas: torch.Tensor) -> torch.Tensor:
    """[T] float64 sigma_t = sqrt((1 - alphabar_t) / alphabar_t), increasing in t."""
    alphabar = torch.cumprod(1.0 - betas.double(), dim=0)
    return ((1.0 - alphabar) / alphabar).sqrt()


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """[n + 1] float64: EDM's schedule (Karras et al. 2022, eq. 5), then 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    inv = 1.0 / rho
    sig = (sigma_max ** inv + ramp * (sigma_min ** inv - sigma_max ** inv)) ** rho
    return torch.cat([sig, sig.new_zeros(1)])


def vp_timesteps(T: int, n: int, spacing: str = "leading", offset: int = 0) -> torch.Tensor:
    """[n] discrete timesteps, descending ('leading' / 'trailing' / 'linspace' as in DDIM practice)."""
    if spacing == "leading":
        t = torch.arange(n, dtype=torch.long) * (T // n) + offset
        return t.flip(0).clamp(max=T - 1)
    if spacing == "trailing":
        return (torch.arange(T, 0, -T / n, dtype=torch.float64).round().long() - 1).clamp(min=0)
    if spacing == "linspace":
        return torch.linspace(0, T - 1, n, dtype=torch.float64).round().long().flip(0)
    raise ValueError(f"unknown timestep spacing {spacing!r}")


def vp_schedule(table: torch.Tensor, n: int, spacing: str = "trailing") -> torch.Tensor:
    """[n + 1] float64 sigmas of a discrete VP model at n of its timesteps, then 0."""
    if n > len(table):
        from neurodiff.errors import NeurodiffError

        raise NeurodiffError(f"steps {n}: a discrete VP model has only {len(table)} timesteps (diffusion.vp.T)")
    t = torch.unique_consecutive(vp_timesteps(len(table), n, spacing))
    return torch.cat([table[t], table.new_zeros(1)])


def sampling_sigmas(precond, steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                    rho: float = 7.0) -> torch.Tensor:
    """The default schedule for a denoiser's preconditioning: Karras for EDM, the model's own steps for VP."""
    table = getattr(precond, "sigma_table", None)
    if table is not None:
        return vp_schedule(table, steps)
    return karras(steps, sigma_min, sigma_max, rho)
