"""Denoising loss in the net's output space, with EDM / min-SNR / uniform weighting.

With D = c_skip x + c_out F, the target of F is (x0 - c_skip x) / c_out, and an x0-space weight lambda
becomes lambda * c_out^2 on F (Karras et al. 2022, eq. 8). SNR = 1 / sigma^2 (Hang et al. 2023, min-SNR).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neurodiff.diffusion.denoiser import append_dims


def sample_sigma(precond, n: int, generator: torch.Generator, P_mean: float = -1.2, P_std: float = 1.2,
                 device=None) -> torch.Tensor:
    """[n] training noise levels: log-normal for EDM, a uniform discrete timestep for VP."""
    table = getattr(precond, "sigma_table", None)
    if table is not None:
        t = torch.randint(0, len(table), (n,), generator=generator)
        return table[t].float().to(device)
    return (P_mean + P_std * torch.randn(n, generator=generator)).exp().to(device)


def loss_weight(precond, sigma: torch.Tensor, c_out: torch.Tensor, weighting: str, gamma: float = 5.0):
    """Per-sample weight on the F-space loss."""
    if weighting == "uniform":
        return torch.ones_like(sigma)
    if weighting == "edm":
        sd = precond.sigma_data
        lam = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
        return lam * c_out ** 2
    if weighting == "min_snr":
        snr = 1.0 / sigma ** 2
        return snr.clamp(max=gamma) * c_out ** 2
    raise ValueError(f"unknown weighting {weighting!r}")


def denoising_loss(net, precond, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, cond=None,
                   loss: str = "mse", weighting: str = "edm", gamma: float = 5.0,
                   huber_delta: float = 1.0) -> torch.Tensor:
    """Scalar loss: weight(sigma) * elementwise(F(c_in x, c_noise), F_target), averaged."""
    sigma = sigma.to(torch.float32)
    c_skip_n, c_out_n, c_in_n, c_noise = precond.scalings(sigma.double())
    c_skip, c_out, c_in = (append_dims(c.float(), x0.ndim) for c in (c_skip_n, c_out_n, c_in_n))
    x = x0 + append_dims(sigma, x0.ndim) * noise
    F_pred = net(c_in * x, c_noise.float(), cond).float()
    F_target = (x0 - c_skip * x) / c_out
    if loss == "mse":
        per = F.mse_loss(F_pred, F_target, reduction="none")
    elif loss == "l1":
        per = F.l1_loss(F_pred, F_target, reduction="none")
    elif loss == "huber":
        per = F.huber_loss(F_pred, F_target, reduction="none", delta=huber_delta)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    w = loss_weight(precond, sigma.double(), c_out_n, weighting, gamma).float()
    return (append_dims(w, per.ndim) * per).mean()


def regression_loss(net, x0: torch.Tensor, cond, loss: str = "l1", huber_delta: float = 1.0) -> torch.Tensor:
    """The deterministic paired baseline with the diffusion net: ``net(0, 0, cond) -> x0``, L1 / L2 / Huber."""
    n = x0.shape[0]
    pred = net(torch.zeros_like(x0), torch.zeros(n, device=x0.device), cond).float()
    if loss == "mse":
        return F.mse_loss(pred, x0)
    if loss == "l1":
        return F.l1_loss(pred, x0)
    if loss == "huber":
        return F.huber_loss(pred, x0, delta=huber_delta)
    raise ValueError(f"unknown loss {loss!r}")
