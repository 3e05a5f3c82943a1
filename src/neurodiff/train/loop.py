"""One training function: data -> denoising loss -> AdamW + EMA, checkpoints by images seen, exact resume, DDP.

All randomness of step s (batch indices, augmentations, sigma, noise, dropout) is drawn from generators
seeded by (seed, s), so ``--resume`` continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from neurodiff import config as config_mod
from neurodiff import dist
from neurodiff.data.datasets import ImageDataset, context_channels, num_classes, num_scalars
from neurodiff.data.normalize import Normalizer
from neurodiff.diffusion.denoiser import make_precond
from neurodiff.diffusion.losses import denoising_loss, regression_loss, sample_sigma
from neurodiff.errors import NeurodiffError
from neurodiff.nn.unet import Cond, build_unet
from neurodiff.precision import autocast, resolve_precision
from neurodiff.tasks.generate import grid, sample_batch, to_uint8_display
from neurodiff.tasks.translate import predict
from neurodiff.train.state import EMA, latest_checkpoint, save_checkpoint


def _seed(*parts: int) -> int:
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def resolve(cfg: config_mod.RunConfig, ds: ImageDataset) -> config_mod.RunConfig:
    """Fill model fields that follow from the data (channels, classes, covariates, dims); check the rest."""
    m, d = cfg.model, cfg.data
    dims = 3 if d.kind == "volumes" else 2
    if m.dims != dims:
        raise NeurodiffError(f"config field 'model.dims': data.kind '{d.kind}' gives {dims}D samples, "
                             f"but model.dims={m.dims}")
    m.in_channels = m.in_channels or ds.channels
    if m.in_channels != ds.channels:
        raise NeurodiffError(f"config field 'model.in_channels': data have {ds.channels} channels, got {m.in_channels}")
    m.out_channels = m.out_channels or m.in_channels
    ctx = ds.num_source_channels or context_channels(d, ds.channels)
    if m.cond_image_channels == 0:
        m.cond_image_channels = ctx
    elif m.cond_image_channels != ctx:
        raise NeurodiffError(f"config field 'model.cond_image_channels': the data give {ctx} conditioning channels "
                             f"(data.context_slices or the paired source), got {m.cond_image_channels}")
    classes = num_classes(d, ds)
    if m.num_classes == 0:
        m.num_classes = classes
    elif classes and m.num_classes != classes:
        raise NeurodiffError(f"config field 'model.num_classes': data have {classes} classes, got {m.num_classes}")
    k = num_scalars(d)
    if m.num_scalars == 0:
        m.num_scalars = k
    elif m.num_scalars != k:
        raise NeurodiffError(f"config field 'model.num_scalars': data give {k} covariates, got {m.num_scalars}")
    if (m.scalar_channels or m.cross_attn) and not m.num_scalars:
        raise NeurodiffError("config field 'model.cross_attn': covariates as channels or tokens need covariates "
                             "(data.covariates with a manifest, or --covariates)")
    if m.num_classes and not classes:
        raise NeurodiffError(f"config field 'model.num_classes': {m.num_classes} classes but the data have no labels "
                             "(set data.labels or data.depth_bins)")
    factor = 2 ** (len(m.channel_mult) - 1)
    size = ds.meta["shape"][1:]
    if any(s % factor for s in size):
        raise NeurodiffError(f"config field 'data.size': samples of size {size} must be multiples of {factor} for "
                             f"model.channel_mult={m.channel_mult} (set data.size or data.crop)")
    d.meta = ds.meta
    return cfg


class _Batches(torch.utils.data.Sampler):
    """Per-step lists of (index, augmentation seed) for this rank, from step ``start`` on."""

    def __init__(self, n_items: int, batch: int, seed: int, start: int, stop: int):
        self.n, self.batch, self.seed, self.start, self.stop = n_items, batch, seed, start, stop
        self.world, self.rank = dist.world_size(), dist.rank()

    def __iter__(self):
        per = self.batch // self.world
        for step in range(self.start, self.stop):
            g = torch.Generator().manual_seed(_seed(self.seed, step, 1))
            idx = torch.randint(0, self.n, (self.batch,), generator=g)
            aug = torch.randint(0, 2 ** 31 - 1, (self.batch,), generator=g)
            sl = slice(self.rank * per, (self.rank + 1) * per)
            yield list(zip(idx[sl].tolist(), aug[sl].tolist()))

    def __len__(self):
        return self.stop - self.start


def widen_input(init: dict, target: dict) -> dict:
    """``init`` weights for a net whose input conv takes extra (conditioning) channels: new channels start at 0,
    so the widened net computes what ``init`` did until training uses them (e.g. a depth model -> a volume model)."""
    out = dict(init)
    w, t = init["input.weight"], target["input.weight"]
    if w.shape != t.shape:
        grown = torch.zeros_like(t)
        grown[:, :w.shape[1]] = w
        out["input.weight"] = grown
    return out


def _preview(net, cfg, path: Path, device, ds, codec=None) -> None:
    from neurodiff.data import io

    m = cfg.model
    n = 16 if m.dims == 2 else 4
    labels = [k % m.num_classes for k in range(n)] if m.num_classes else None
    image = scalars = None
    if cfg.data.sr_factor or ds.num_source_channels:   # conditioned on an image: the first training items' inputs
        items = [ds[(k % len(ds), 0)] for k in range(n)]
        image = torch.stack([it["cond_image"] for it in items]).to(device)
        scalars = [it["scalars"].tolist() for it in items] if "scalars" in items[0] else None
    if cfg.train.objective == "regression":
        x = predict(net, image, cfg.model.in_channels).clamp(-1, 1)
    else:
        x = sample_batch(net, cfg, list(range(n)), labels, scalars, guidance=1.0, steps=20, sampler="dpmpp_2m",
                         exact=False, device=device, image=image)
        if codec is not None:
            x = codec.decode(x).clamp(-1, 1)
    io.write(path, grid(to_uint8_display(x), ncol=min(n, 8))[None])


def start_run(run_dir: Path, resume: bool, tc, device) -> tuple[str, dict | None]:
    """Checks and state shared by every training run: the precision to use, the checkpoint to resume (or None).
    A resumed run first removes the temporary files of a killed one (the checkpoints themselves are whole)."""
    precision = resolve_precision(tc.precision, device, "train.precision")
    if resume and dist.is_main():
        from neurodiff.data.temps import remove_stale_temps

        remove_stale_temps(run_dir / "checkpoints")
        remove_stale_temps(run_dir)
    state = latest_checkpoint(run_dir) if resume else None
    if resume and state is None:
        raise NeurodiffError(f"{run_dir}: --resume given but no checkpoint found")
    if not resume and list((run_dir / "checkpoints").glob("ckpt-*.pt")):
        raise NeurodiffError(f"{run_dir}: already holds checkpoints; use --resume to continue or a new --out")
    if tc.batch % dist.world_size():
        raise NeurodiffError(f"config field 'train.batch': {tc.batch} is not divisible by {dist.world_size()} processes")
    return precision, state


def train(cfg: config_mod.RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          max_steps: int | None = None, max_seconds: float | None = None, evaluator=None) -> dict:
    """Train (or resume) a diffusion model into ``run_dir``; returns a summary of the run.

    ``max_steps`` / ``max_seconds`` stop early (a checkpoint is written); ``--resume`` continues from there.
    ``evaluator(net, cfg, dataset, device) -> dict`` runs every ``train.eval_every_nimg`` (logged as 'eval').
    """
    t_start = time.time()
    device = dist.init()
    run_dir = Path(run_dir)
    tc = cfg.train
    precision, state = start_run(run_dir, resume, tc, device)
    normalizer = None
    if state is not None:
        saved = config_mod.from_dict(json.loads(state["config"]))
        if config_mod.to_dict(saved.model) != config_mod.to_dict(cfg.model) and cfg.model.in_channels:
            raise NeurodiffError("config field 'model': differs from the checkpoint's; a resumed run keeps its model")
        cfg.model = saved.model
        normalizer = Normalizer(**saved.data.meta["normalizer"])
    ds = ImageDataset(cfg.data, normalizer)
    codec = None
    if cfg.data.codec:   # latent diffusion: the items encoded once, cached in the run folder
        from neurodiff.data.latents import LatentDataset
        from neurodiff.train.state import load_codec

        codec = load_codec(cfg.data.codec, device)
        ds = LatentDataset(ds, codec, run_dir / "latents.safetensors", device, progress and dist.is_main())
        codec.shift, codec.scale = ds.meta["latent"]["shift"], ds.meta["latent"]["scale"]
    cfg = resolve(cfg, ds)
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "previews").mkdir(exist_ok=True)
        config_mod.dump(cfg, run_dir / "config.yaml")
    cfg_json = json.dumps(config_mod.to_dict(cfg))

    torch.manual_seed(tc.seed)
    net = build_unet(cfg.model).to(device)
    ema = EMA(net)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    nimg, skipped = 0, 0
    if state is None and tc.init_from:
        from neurodiff.train.state import load_model

        init = load_model(tc.init_from)
        free = ("cond_image_channels", "channels_last", "zero_init", "checkpointing", "dropout")
        a, b = (dict(config_mod.to_dict(c.model)) for c in (init.cfg, cfg))
        if {k: v for k, v in a.items() if k not in free} != {k: v for k, v in b.items() if k not in free} \
                or a["cond_image_channels"] > b["cond_image_channels"]:
            raise NeurodiffError(f"config field 'train.init_from': {tc.init_from} has a different model config")
        weights = widen_input(init.net.state_dict(), net.state_dict())
        net.load_state_dict(weights)
        ema.net.load_state_dict(weights)
    if state is not None:
        net.load_state_dict(state["net"])
        ema.net.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        nimg, skipped = state["nimg"], state.get("skipped", 0)
    ddp = torch.nn.parallel.DistributedDataParallel(net) if dist.world_size() > 1 else net
    precond = make_precond(cfg.diffusion)
    d = cfg.diffusion
    weighting = d.weighting if d.weighting != "auto" else ("edm" if d.precond == "edm" else "uniform")

    total_steps = math.ceil(tc.total_nimg / tc.batch)
    start = nimg // tc.batch
    stop = total_steps if max_steps is None else min(total_steps, start + max_steps)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=_Batches(len(ds), tc.batch, tc.seed, start, stop),
                                         num_workers=tc.workers, persistent_workers=False)
    log = open(run_dir / "metrics.jsonl", "a") if dist.is_main() else None
    tb = None
    if dist.is_main():
        try:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            tb = None
    bar = None
    if progress and dist.is_main():
        from tqdm import tqdm
        import sys

        bar = tqdm(total=tc.total_nimg, initial=nimg, unit="img", desc="training", dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 15.0)
    losses, t_last, n_last, first_loss, last_loss = [], time.time(), nimg, None, None
    saved_nimg = nimg
    checkpoint = lambda: save_checkpoint(run_dir, {  # noqa: E731
        "net": net.state_dict(), "ema": ema.net.state_dict(), "opt": opt.state_dict(), "nimg": nimg,
        "skipped": skipped, "config": cfg_json}, keep=tc.keep_checkpoints) if dist.is_main() else None
    net.train()
    for step, batch in zip(range(start, stop), loader):
        torch.manual_seed(_seed(tc.seed, step, 3, dist.rank()))   # dropout
        x0 = batch["x"].to(device, non_blocking=True)
        n = x0.shape[0]
        # per-sample randomness keyed by the sample's index in the global batch: any process count draws the same
        first = dist.rank() * n
        gens = [torch.Generator().manual_seed(_seed(tc.seed, step, 2, first + i)) for i in range(n)]
        drop = torch.cat([torch.rand(1, generator=g) for g in gens]) < d.cond_drop_prob
        cond = Cond(label=batch.get("label"), scalars=batch.get("scalars"), image=batch.get("cond_image"), drop=drop)
        cond = Cond(*(None if t is None else t.to(device) for t in (cond.label, cond.scalars, cond.image, cond.drop)))
        sigma = torch.cat([sample_sigma(precond, 1, g, d.P_mean, d.P_std) for g in gens]).to(device)
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).to(device)
        with autocast(precision, device):
            if tc.objective == "regression":
                loss = regression_loss(ddp, x0, cond, d.loss, d.huber_delta)
            else:
                loss = denoising_loss(ddp, precond, x0, sigma, noise, cond, d.loss, weighting, d.min_snr_gamma,
                                      d.huber_delta)
        loss_value = dist.all_reduce_mean(loss.detach()).item()
        if not math.isfinite(loss_value):
            if tc.nan_policy == "stop":
                if log:
                    log.close()
                raise NeurodiffError(f"training loss became {loss_value} at {nimg} images; stopped, the last "
                                     f"checkpoint in {run_dir / 'checkpoints'} is kept (train.nan_policy=skip skips such steps)")
            skipped += 1
            opt.zero_grad(set_to_none=True)
            nimg += tc.batch
            continue
        loss.backward()
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
        for group in opt.param_groups:
            group["lr"] = tc.lr * min(1.0, (nimg + tc.batch) / tc.warmup_nimg) if tc.warmup_nimg else tc.lr
        opt.step()
        opt.zero_grad(set_to_none=True)
        nimg += tc.batch
        ema.update(net, nimg, tc.batch, tc.ema_halflife_nimg, tc.ema_rampup)
        losses.append(loss_value)
        first_loss = loss_value if first_loss is None else first_loss
        last_loss = loss_value
        if bar:
            bar.update(tc.batch)
            rate = bar.format_dict.get("rate") or 0.0
            bar.set_postfix({"loss": f"{loss_value:.4f}", "it/s": f"{rate / tc.batch:.2f}"}, refresh=False)
        done = nimg >= tc.total_nimg
        if dist.is_main() and (nimg // tc.log_every_nimg != (nimg - tc.batch) // tc.log_every_nimg or done):
            now = time.time()
            rec = {"nimg": nimg, "step": step + 1, "loss": sum(losses) / len(losses), "lr": opt.param_groups[0]["lr"],
                   "img_per_s": (nimg - n_last) / max(now - t_last, 1e-9), "skipped": skipped, "time": now}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if tb:
                tb.add_scalar("loss", rec["loss"], nimg)
                tb.add_scalar("lr", rec["lr"], nimg)
            losses, t_last, n_last = [], now, nimg
        if dist.is_main() and (nimg // tc.preview_every_nimg != (nimg - tc.batch) // tc.preview_every_nimg or done):
            _preview(ema.net, cfg, run_dir / "previews" / f"preview_{nimg:012d}.png", device, ds, codec)
        if evaluator and dist.is_main() and tc.eval_every_nimg and (
                nimg // tc.eval_every_nimg != (nimg - tc.batch) // tc.eval_every_nimg or done):
            log.write(json.dumps({"nimg": nimg, "eval": evaluator(ema.net, cfg, ds, device)}) + "\n")
            log.flush()
        if nimg // tc.checkpoint_every_nimg != (nimg - tc.batch) // tc.checkpoint_every_nimg or done:
            checkpoint()
            saved_nimg = nimg
        if max_seconds is not None:  # every rank must stop at the same step (DDP all-reduces)
            over = torch.tensor(float(time.time() - t_start > max_seconds))
            if dist.all_reduce_mean(over).item() > 0:
                break
    if nimg != saved_nimg:  # stopped by max_steps between checkpoints
        checkpoint()
    if bar:
        bar.close()
    if log:
        log.close()
    if tb:
        tb.close()
    dist.barrier()
    return {"run_dir": str(run_dir), "nimg": nimg, "first_loss": first_loss, "last_loss": last_loss,
            "skipped": skipped, "config": cfg}
