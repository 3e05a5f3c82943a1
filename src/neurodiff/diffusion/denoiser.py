"""Preconditioning: a net F becomes a denoiser D(x, sigma) = c_skip x + c_out F(c_in x, c_noise).

EDM (Karras et al. 2022, Table 1) and discrete VP (DDPM with eps / v / x0 prediction) are both written as
the four scalings, so training, sampling and guidance are the same code for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurodiff.diffusion.schedules import vp_betas, vp_sigmas


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """[N] -> [N, 1, ..., 1] with ``ndim`` dims, for broadcasting per-sample scalars."""
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


@dataclass(frozen=True)
class EDM:
    """EDM preconditioning; c_noise = ln(sigma) / 4."""

    sigma_data: float = 0.5
    sigma_table = None

    def scalings(self, sigma: torch.Tensor):
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1.0 / (sigma ** 2 + sd2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise


class VP:
    """Discrete VP (DDPM) with T steps: the net sees x_t = x / sqrt(1 + sigma^2) and the timestep t."""

    def __init__(self, T: int = 1000, beta_schedule: str = "linear", prediction: str = "eps",
                 beta_start: float = 1e-4, beta_end: float = 0.02):
        if prediction not in ("eps", "v", "x0"):
            raise ValueError(f"unknown prediction {prediction!r}")
        self.T, self.prediction = T, prediction
        self.betas = vp_betas(T, beta_schedule, beta_start, beta_end)
        self.sigma_table = vp_sigmas(self.betas)   # [T] float64, increasing
        self.sigma_data = 1.0

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep by linear interpolation of log sigma; exact at the table's own sigmas."""
        log_table = self.sigma_table.to(sigma.device).log()
        log_s = sigma.double().clamp(self.sigma_table[0].item(), self.sigma_table[-1].item()).log()
        hi = torch.searchsorted(log_table, log_s).clamp(1, self.T - 1)
        lo = hi - 1
        w = (log_s - log_table[lo]) / (log_table[hi] - log_table[lo])
        t = lo.double() + w.clamp(0, 1)
        return torch.where(log_s == log_table[lo], lo.double(), t)

    def scalings(self, sigma: torch.Tensor):
        alpha = 1.0 / (1.0 + sigma ** 2).sqrt()   # sqrt(alphabar)
        c_in = alpha
        if self.prediction == "eps":
            c_skip, c_out = torch.ones_like(sigma), -sigma
        elif self.prediction == "v":
            c_skip, c_out = alpha ** 2, -sigma * alpha
        else:
            c_skip, c_out = torch.zeros_like(sigma), torch.ones_like(sigma)
        return c_skip, c_out, c_in, self.sigma_to_t(sigma).to(sigma.dtype)


def make_precond(diffusion_cfg):
    d = diffusion_cfg
    if d.precond == "edm":
        return EDM(d.sigma_data)
    v = d.vp
    return VP(v.T, v.beta_schedule, v.prediction, v.beta_start, v.beta_end)


def denoise(net, precond, x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
    """x0_hat = D(x, sigma); ``sigma`` is [N] (or a scalar). Scalings in float64, the net in float32."""
    sigma = sigma.to(torch.float64).expand(x.shape[0]) if sigma.ndim == 0 else sigma.to(torch.float64)
    c_skip, c_out, c_in, c_noise = (append_dims(s, x.ndim) if i < 3 else s
                                    for i, s in enumerate(precond.scalings(sigma.to(x.device))))
    F_x = net((c_in * x).float(), c_noise.float(), cond)
    return (c_skip * x + c_out * F_x.to(c_out.dtype)).to(x.dtype)


def bind(net, precond, cond=None):
    """Denoiser with the conditioning bound: ``D(x, sigma)`` for the samplers."""
    return lambda x, sigma: denoise(net, precond, x, sigma, cond)


def guided(net, precond, cond, scale: float):
    """Classifier-free guidance: uncond + w (cond - uncond) in one batched pass; w = 1 is plain conditional."""
    if scale == 1.0 or cond is None:
        return bind(net, precond, cond)

    def D(x, sigma):
        n = x.shape[0]
        both = cond.repeat(2)
        both.drop = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]).to(x.device)
        s = sigma.expand(n) if sigma.ndim == 0 else sigma
        out = denoise(net, precond, torch.cat([x, x]), torch.cat([s, s]), both)
        c, u = out[:n], out[n:]
        return u + scale * (c - u)

    return D


def clamped(D, lo: float = -1.0, hi: float = 1.0):
    """Clamp x0_hat to the data range (the normalised [-1, 1] by default)."""
    return lambda x, sigma: D(x, sigma).clamp(lo, hi)
