"""Training of the KL autoencoder: L1 + SSIM + KL, patch-adversarial after a warm-up, optional perceptual term.

Same run folder, checkpoints by images seen, exact resume, NaN policy and DDP as ``train/loop.py``; the
discriminator and its optimizer are part of the checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from neurodiff import config as config_mod
from neurodiff import dist
from neurodiff.data.datasets import ImageDataset
from neurodiff.data.normalize import Normalizer
from neurodiff.errors import NeurodiffError
from neurodiff.nn.autoencoder import PatchDiscriminator, build_autoencoder, hinge_d_loss, kl_loss, perceptual_loss, ssim_loss
from neurodiff.precision import autocast
from neurodiff.train.loop import _Batches, _seed, start_run
from neurodiff.train.state import EMA, save_checkpoint


def _check(cfg, ds: ImageDataset) -> None:
    a, d = cfg.autoencoder, cfg.data
    dims = 3 if d.kind == "volumes" else 2
    if a.dims != dims:
        raise NeurodiffError(f"config field 'autoencoder.dims': data.kind '{d.kind}' gives {dims}D samples, "
                             f"but autoencoder.dims={a.dims}")
    factor = 2 ** (len(a.channel_mult) - 1)
    size = ds.meta["shape"][1:]
    if any(s % factor for s in size):
        raise NeurodiffError(f"config field 'data.size': samples of size {size} must be multiples of {factor} for "
                             f"autoencoder.channel_mult={a.channel_mult} (set data.size or data.crop)")


def _preview(ae, ds, path: Path, device) -> None:
    from neurodiff.data import io
    from neurodiff.tasks.generate import grid, to_uint8_display

    x = torch.stack([ds[(k % len(ds), 0)]["x"] for k in range(4)]).to(device)
    with torch.no_grad():
        y = ae.decode(ae.encode(x)[0])
    io.write(path, grid(to_uint8_display(torch.cat([x, y.clamp(-1, 1)])), ncol=4)[None])


def train_autoencoder(cfg: config_mod.RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
                      max_steps: int | None = None, max_seconds: float | None = None, features=None) -> dict:
    """Train (or resume) a KL autoencoder into ``run_dir``; returns a summary of the run.

    ``features``: the network of the perceptual term (``autoencoder.perceptual_features``, loaded by the caller)."""
    t_start = time.time()
    device = dist.init()
    run_dir, tc, a = Path(run_dir), cfg.train, cfg.autoencoder
    cfg.train.objective = "autoencoder"
    precision, state = start_run(run_dir, resume, tc, device)
    normalizer = None
    if state is not None:
        saved = config_mod.from_dict(json.loads(state["config"]))
        cfg.autoencoder, cfg.model = saved.autoencoder, saved.model
        normalizer = Normalizer(**saved.data.meta["normalizer"])
    ds = ImageDataset(cfg.data, normalizer)
    _check(cfg, ds)
    cfg.model.in_channels = cfg.model.out_channels = ds.channels
    cfg.model.dims = a.dims
    cfg.data.meta = ds.meta
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "previews").mkdir(exist_ok=True)
        config_mod.dump(cfg, run_dir / "config.yaml")
    cfg_json = json.dumps(config_mod.to_dict(cfg))

    torch.manual_seed(tc.seed)
    ae = build_autoencoder(a, ds.channels).to(device)
    ema = EMA(ae)
    disc = PatchDiscriminator(a.dims, ds.channels, a.disc_channels).to(device) if a.adv_weight else None
    opt = torch.optim.AdamW(ae.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=tc.lr, betas=tuple(tc.betas)) if disc else None
    if a.perceptual_weight and features is None:
        raise NeurodiffError("config field 'autoencoder.perceptual_features': give the loaded feature network")
    features = features if a.perceptual_weight else None
    for p in getattr(features, "parameters", lambda: [])():
        p.requires_grad_(False)
    nimg, skipped = 0, 0
    if state is not None:
        ae.load_state_dict(state["net"])
        ema.net.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        if disc is not None:
            disc.load_state_dict(state["disc"])
            opt_d.load_state_dict(state["opt_d"])
        nimg, skipped = state["nimg"], state.get("skipped", 0)
    wrap = (lambda m: torch.nn.parallel.DistributedDataParallel(m)) if dist.world_size() > 1 else (lambda m: m)
    ae_p, disc_p = wrap(ae), (wrap(disc) if disc else None)

    total_steps = math.ceil(tc.total_nimg / tc.batch)
    start = nimg // tc.batch
    stop = total_steps if max_steps is None else min(total_steps, start + max_steps)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=_Batches(len(ds), tc.batch, tc.seed, start, stop),
                                         num_workers=tc.workers)
    log = open(run_dir / "metrics.jsonl", "a") if dist.is_main() else None
    bar = None
    if progress and dist.is_main():
        import sys

        from tqdm import tqdm

        bar = tqdm(total=tc.total_nimg, initial=nimg, unit="img", desc="training autoencoder", dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 15.0)
    sums, t_last, n_last, saved_nimg, first, last = {}, time.time(), nimg, nimg, None, None

    def checkpoint():
        if dist.is_main():
            extra = {"disc": disc.state_dict(), "opt_d": opt_d.state_dict()} if disc else {}
            save_checkpoint(run_dir, {"net": ae.state_dict(), "ema": ema.net.state_dict(), "opt": opt.state_dict(),
                                      "nimg": nimg, "skipped": skipped, "config": cfg_json, **extra},
                            keep=tc.keep_checkpoints)

    ae.train()
    for step, batch in zip(range(start, stop), loader):
        x = batch["x"].to(device)
        g = torch.Generator().manual_seed(_seed(tc.seed, step, 5, dist.rank()))
        adv_on = disc is not None and nimg >= a.adv_start_nimg
        with autocast(precision, device):
            x_hat, mean, logvar = ae_p(x, g)
            x_hat = x_hat.float()
            terms = {"l1": F.l1_loss(x_hat, x), "ssim": ssim_loss(x_hat, x), "kl": kl_loss(mean.float(), logvar.float())}
            loss = terms["l1"] + a.ssim_weight * terms["ssim"] + a.kl_weight * terms["kl"]
            if features is not None:
                terms["perceptual"] = perceptual_loss(features, x_hat, x)
                loss = loss + a.perceptual_weight * terms["perceptual"]
            if adv_on:
                terms["adv_g"] = -disc_p(x_hat).float().mean()
                loss = loss + a.adv_weight * terms["adv_g"]
        value = dist.all_reduce_mean(loss.detach()).item()
        if not math.isfinite(value):
            if tc.nan_policy == "stop":
                if log:
                    log.close()
                raise NeurodiffError(f"autoencoder loss became {value} at {nimg} images; stopped, the last checkpoint "
                                     f"in {run_dir / 'checkpoints'} is kept (train.nan_policy=skip skips such steps)")
            skipped += 1
            opt.zero_grad(set_to_none=True)
            nimg += tc.batch
            continue
        lr = tc.lr * min(1.0, (nimg + tc.batch) / tc.warmup_nimg) if tc.warmup_nimg else tc.lr
        loss.backward()
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(ae.parameters(), tc.grad_clip)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        opt.zero_grad(set_to_none=True)
        if adv_on:
            with autocast(precision, device):
                d_loss = hinge_d_loss(disc_p(x).float(), disc_p(x_hat.detach()).float())
            d_loss.backward()
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
            terms["disc"] = d_loss
        nimg += tc.batch
        ema.update(ae, nimg, tc.batch, tc.ema_halflife_nimg, tc.ema_rampup)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        sums["n"] = sums.get("n", 0) + 1
        first = value if first is None else first
        last = value
        if bar:
            bar.update(tc.batch)
            bar.set_postfix({"l1": f"{float(terms['l1']):.4f}"}, refresh=False)
        done = nimg >= tc.total_nimg
        crossed = lambda every: nimg // every != (nimg - tc.batch) // every or done  # noqa: E731
        if dist.is_main() and crossed(tc.log_every_nimg):
            now = time.time()
            rec = {"nimg": nimg, "step": step + 1, "loss": last, "lr": lr, "skipped": skipped, "time": now,
                   "img_per_s": (nimg - n_last) / max(now - t_last, 1e-9),
                   **{k: v / sums["n"] for k, v in sums.items() if k != "n"}}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            sums, t_last, n_last = {}, now, nimg
        if dist.is_main() and crossed(tc.preview_every_nimg):
            _preview(ema.net, ds, run_dir / "previews" / f"preview_{nimg:012d}.png", device)
        if crossed(tc.checkpoint_every_nimg):
            checkpoint()
            saved_nimg = nimg
        if max_seconds is not None:
            over = torch.tensor(float(time.time() - t_start > max_seconds))
            if dist.all_reduce_mean(over).item() > 0:
                break
    if nimg != saved_nimg:
        checkpoint()
    for closer in (bar, log):
        if closer:
            closer.close()
    dist.barrier()
    return {"run_dir": str(run_dir), "nimg": nimg, "first_loss": first, "last_loss": last, "skipped": skipped,
            "config": cfg}
