"""Schedules, preconditioning, samplers and losses: analytic answers and parity with diffusers."""

import pytest
import torch

from neurodiff.diffusion.denoiser import EDM, VP, append_dims, bind, denoise, guided
from neurodiff.diffusion.losses import denoising_loss, loss_weight
from neurodiff.diffusion.samplers import SAMPLERS, nfe, randn_like
from neurodiff.diffusion.schedules import karras, vp_betas, vp_schedule, vp_timesteps


def analytic(s):
    """Exact denoiser for data ~ N(0, s^2 I): D(x, sigma) = x s^2 / (s^2 + sigma^2)."""
    return lambda x, sigma: x * s ** 2 / (s ** 2 + append_dims(sigma, x.ndim) ** 2)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "ancestral"])
def test_sampler_recovers_gaussian_std(name, dims):
    s, n = 0.7, 4096
    gens = [torch.Generator().manual_seed(k) for k in range(n)]
    noise = randn_like(torch.zeros(n, 1, *([4] * dims)), gens)
    steps = 64 if name in ("heun", "dpmpp_2m") else 512
    x = SAMPLERS[name](analytic(s), noise, karras(steps, 0.002, 80.0), generator=gens)
    assert x.dtype == torch.float64
    assert abs(x.std().item() / s - 1) < 0.02


def test_ancestral_is_deterministic_per_sample():
    """Sample k depends only on its generator: the same row whatever the batch it is drawn in."""
    D = analytic(0.5)
    sig = karras(10, 0.002, 80.0)
    gens = lambda ks: [torch.Generator().manual_seed(k) for k in ks]  # noqa: E731
    full = SAMPLERS["ancestral"](D, randn_like(torch.zeros(4, 1, 8, 8), gens(range(4))), sig, generator=gens(range(4)))
    one = SAMPLERS["ancestral"](D, randn_like(torch.zeros(1, 1, 8, 8), gens([2])), sig, generator=gens([2]))
    assert torch.equal(full[2], one[0])


@pytest.mark.parametrize("schedule,dname", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_betas_match_diffusers(schedule, dname):
    from diffusers import DDPMScheduler

    ours = vp_betas(1000, schedule)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=dname).betas.double()
    assert (ours - ref).abs().max().item() < 1e-6


@pytest.mark.parametrize("schedule,dname", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_vp_euler_matches_diffusers_ddim(schedule, dname):
    """VP wrapper + Euler over the same timesteps equals diffusers' DDIMScheduler (eta=0) driving the same net."""
    from diffusers import DDIMScheduler

    torch.manual_seed(0)
    T, steps = 1000, 25
    net_layer = torch.nn.Conv2d(1, 1, 3, padding=1)

    sched = DDIMScheduler(num_train_timesteps=T, beta_schedule=dname, set_alpha_to_one=True, steps_offset=0,
                          clip_sample=False, timestep_spacing="leading")
    alphabar = sched.alphas_cumprod

    def eps_model(x, t, cond=None):
        # the exact eps for data ~ N(0, 0.25) plus a learned-looking perturbation; t must be an exact integer
        t = torch.as_tensor(t)
        assert torch.equal(t, t.round())
        a = alphabar[t.long()].reshape(-1, 1, 1, 1)
        return x * (1 - a).sqrt() / (0.25 * a + 1 - a) + 0.1 * torch.tanh(net_layer(x))

    sched.set_timesteps(steps)
    x_vp = torch.randn(2, 1, 8, 8)
    ref = x_vp.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            ref = sched.step(eps_model(ref, t.expand(2)), t, ref).prev_sample

        vp = VP(T, schedule, "eps")
        t_ours = vp_timesteps(T, steps, "leading")
        assert torch.equal(t_ours, sched.timesteps.long())
        sigmas = torch.cat([vp.sigma_table[t_ours], torch.zeros(1, dtype=torch.float64)])
        noise = x_vp.double() * (1 + sigmas[0] ** 2).sqrt() / sigmas[0]  # x_ve = x_vp / sqrt(alphabar)
        out = SAMPLERS["ddim"](bind(eps_model, vp), noise, sigmas)
    assert (out.float() - ref).abs().max().item() < 1e-4


def test_vp_sigma_to_t_exact_on_table():
    vp = VP(300, "linear")
    t = torch.tensor([0, 1, 150, 299])
    assert torch.equal(vp.sigma_to_t(vp.sigma_table[t]), t.double())
    mid = (vp.sigma_table[10].log() + vp.sigma_table[11].log()).div(2).exp()
    assert abs(vp.sigma_to_t(mid.reshape(1)).item() - 10.5) < 1e-6


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_vp_predictions_reconstruct_x0(prediction):
    """A net returning the exact target of its parameterisation makes D(x, sigma) = x0."""
    vp = VP(1000, "cosine", prediction)
    x0, eps = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 1, 4, 4, dtype=torch.float64)
    sigma = vp.sigma_table[torch.tensor([5, 400, 990])]
    x = x0 + append_dims(sigma, 4) * eps
    a = append_dims(1 / (1 + sigma ** 2).sqrt(), 4)
    target = {"eps": eps, "x0": x0, "v": a * eps - (1 - a ** 2).sqrt() * x0}[prediction]
    out = denoise(lambda xin, c, cond: target, vp, x, sigma)
    assert (out - x0).abs().max().item() < 1e-10


def test_edm_scalings_and_weighting():
    edm = EDM(0.5)
    sigma = torch.tensor([0.01, 0.5, 10.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm.scalings(sigma)
    assert torch.allclose(c_skip, 0.25 / (sigma ** 2 + 0.25))
    # EDM weighting is uniform in the net's output space for EDM preconditioning
    assert torch.allclose(loss_weight(edm, sigma, c_out, "edm"), torch.ones(3, dtype=torch.float64))
    vp = VP(1000)
    _, c_out_vp, _, _ = vp.scalings(sigma)
    w = loss_weight(vp, sigma, c_out_vp, "min_snr", 5.0)  # eps-pred: min(snr, g) / snr
    snr = 1 / sigma ** 2
    assert torch.allclose(w, snr.clamp(max=5.0) / snr)


def test_karras_and_vp_schedules_end_in_zero():
    k = karras(10, 0.002, 80.0)
    assert len(k) == 11 and k[-1] == 0 and abs(k[0] - 80) < 1e-9 and abs(k[-2] - 0.002) < 1e-12
    assert torch.all(k[:-1] > k[1:])
    vp = VP(1000)
    s = vp_schedule(vp.sigma_table, 10)
    assert len(s) == 11 and s[-1] == 0 and s[0] == vp.sigma_table[-1]
    assert nfe("heun", 10) == 19 and nfe("euler", 10) == 10


def test_guidance_is_one_batched_pass_and_extrapolates():
    from neurodiff.nn.unet import Cond

    calls = []

    def net(x, c_noise, cond):
        calls.append(x.shape[0])
        return torch.where(append_dims(cond.drop, x.ndim), torch.zeros_like(x), torch.ones_like(x))

    cond = Cond(label=torch.tensor([1, 2]))
    D = guided(net, EDM(0.5), cond, 3.0)
    x = torch.zeros(2, 1, 4, 4)
    out = D(x, torch.tensor([1.0, 1.0]))
    assert calls == [4]
    _, c_out, _, _ = EDM(0.5).scalings(torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(out, torch.full_like(x, 3.0 * c_out.item()))


def test_loss_is_zero_for_perfect_net_and_positive_otherwise():
    edm = EDM(0.5)
    x0 = torch.randn(4, 1, 8, 8)
    noise = torch.randn_like(x0)
    sigma = torch.tensor([0.1, 0.5, 1.0, 5.0])
    c_skip, c_out, c_in, _ = (append_dims(c.float(), 4) for c in edm.scalings(sigma.double()))
    x = x0 + append_dims(sigma, 4) * noise
    perfect = lambda xin, c, cond: (x0 - c_skip * x) / c_out  # noqa: E731
    for kind in ("mse", "l1", "huber"):
        assert denoising_loss(perfect, edm, x0, sigma, noise, loss=kind).item() < 1e-10
        assert denoising_loss(lambda xin, c, cond: torch.zeros_like(xin), edm, x0, sigma, noise, loss=kind) > 0.01


def test_default_vp_schedule_matches_diffusers_trailing_ddim():
    """The schedule sampling actually uses (sampling_sigmas -> trailing spacing) against DDIMScheduler."""
    from diffusers import DDIMScheduler

    from neurodiff.diffusion.schedules import sampling_sigmas

    T, steps = 300, 30
    sched = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", set_alpha_to_one=True, steps_offset=0,
                          clip_sample=False, timestep_spacing="trailing")
    sched.set_timesteps(steps)
    ab = sched.alphas_cumprod

    def eps_model(x, t, cond=None):
        a = ab[torch.as_tensor(t).round().long()].reshape(-1, 1, 1, 1)
        return x * (1 - a).sqrt() / (0.25 * a + 1 - a)

    vp = VP(T, "linear", "eps")
    sigmas = sampling_sigmas(vp, steps)
    assert torch.equal(vp.sigma_to_t(sigmas[:-1]).long(), sched.timesteps.long())
    x_vp = torch.randn(2, 1, 8, 8)
    ref = x_vp.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            ref = sched.step(eps_model(ref, t.expand(2)), t, ref).prev_sample
        out = SAMPLERS["ddim"](bind(eps_model, vp), x_vp.double() * (1 + sigmas[0] ** 2).sqrt() / sigmas[0], sigmas)
    assert (out.float() - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "ancestral"])
def test_vp_schedule_samplers_recover_unit_gaussian(name):
    """DDPM-style start x_T ~ N(0, I) in VP space (std sqrt(1 + sigma_max^2) in ours) with T=300 steps."""
    from neurodiff.diffusion.schedules import vp_schedule

    vp = VP(300, "linear")
    sig = vp_schedule(vp.sigma_table, 300)
    gens = [torch.Generator().manual_seed(k) for k in range(4096)]
    noise = randn_like(torch.zeros(4096, 1, 4, 4), gens) * (1 + sig[0] ** 2).sqrt() / sig[0]
    x = SAMPLERS[name](analytic(1.0), noise, sig, generator=gens)
    assert abs(x.std().item() - 1) < 0.02


def test_too_many_vp_steps_is_an_error_not_nan():
    from neurodiff.diffusion.schedules import vp_schedule
    from neurodiff.errors import NeurodiffError

    vp = VP(300, "linear")
    with pytest.raises(NeurodiffError, match="300 timesteps"):
        vp_schedule(vp.sigma_table, 400)
    s = vp_schedule(vp.sigma_table, 300)
    assert torch.all(s[:-1] > s[1:])
