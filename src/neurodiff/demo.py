"""The demo: a depth-conditional model of the MNI152 T1 template's axial slices, trained here, sampled per depth.

Real data that install with the package (nilearn ships the template); nothing is downloaded. Writes a grid
PNG (one row per depth), a TIFF stack (one generated slice per depth, with spacing) and a depth check.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import torch

from neurodiff import config as config_mod
from neurodiff.data import io
from neurodiff.data.datasets import ImageDataset
from neurodiff.errors import NeurodiffError
from neurodiff.tasks.generate import grid, sample_batch, sample_seed, to_output
from neurodiff.train.loop import train

TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
WEIGHTS = Path(__file__).parent / "assets" / "demo"          # produced by bench/demo_weights.sh
FINETUNE = ["train.lr=2e-4", "train.warmup_nimg=0", "train.checkpoint_every_nimg=1600",
            "train.preview_every_nimg=1600", "train.log_every_nimg=320"]
IMG_PER_S = 30   # fine-tuning speed on 2 CPU cores (measured ~37 with bf16), to turn minutes into images


def mni_template_path() -> Path:
    """Path of the MNI152 2009 T1 template inside the installed nilearn package (no import, no download)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise NeurodiffError("the demo needs nilearn's bundled MNI152 template: pip install nilearn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / TEMPLATE
    if not path.is_file():
        raise NeurodiffError(f"{path}: MNI152 template not found in the installed nilearn")
    return path


def depth_check(real: torch.Tensor, real_labels: torch.Tensor, fake: torch.Tensor, fake_labels: torch.Tensor,
                bins: int) -> dict:
    """Nearest-mean depth of each generated slice among the real per-depth mean slices.

    Returns the fraction whose nearest depth is the requested one (exact) and within one bin.
    """
    means = torch.stack([real[real_labels == b].mean(0) for b in range(bins)])        # [bins, C, H, W]
    d = ((fake[:, None] - means[None]) ** 2).flatten(2).mean(-1)                       # [N, bins]
    pred = d.argmin(1)
    return {"exact": (pred == fake_labels).float().mean().item(),
            "within_one": ((pred - fake_labels).abs() <= 1).float().mean().item()}


def _write_sets(out: Path, cfg, fake_u8, labels, real_u8, real_labels, digest: str) -> None:
    """Generated slices (samples/ + manifest.csv) and real slices (real/<depth>/) as PNG for evaluation."""
    from neurodiff.tasks.generate import write_manifest

    rows = []
    for k, (x, lab) in enumerate(zip(fake_u8, labels)):
        name = f"sample_{k:06d}.png"
        io.write(out / "samples" / name, x)
        rows.append({"file": name, "index": k, "seed": 0, "label": lab, "label_name": f"{lab:02d}",
                     "covariates": "", "guidance": cfg.sample.guidance, "sampler": cfg.sample.sampler,
                     "steps": cfg.sample.steps, "model_digest": digest})
    write_manifest(out / "samples" / "manifest.csv", rows)
    for k, (x, lab) in enumerate(zip(real_u8, real_labels.tolist())):
        io.write(out / "real" / f"{lab:02d}" / f"slice_{k:03d}.png", x)


def run_demo(out: str | Path, minutes: float | None = None, overrides: list[str] | None = None,
             progress: bool = True, per_depth: int = 4, from_scratch: bool = False) -> dict:
    """Fine-tune the shipped weights for ``minutes`` (default 2), or train from scratch, then sample."""
    out = Path(out)
    t0 = time.time()
    template = mni_template_path()
    if minutes is not None and minutes <= 0:
        raise NeurodiffError(f"--minutes: expected a positive number, got {minutes}")
    finetune = not from_scratch
    if finetune and not (WEIGHTS / "model.safetensors").is_file():
        raise NeurodiffError(f"{WEIGHTS}: shipped demo weights missing; use --from-scratch")
    base = [f"train.init_from={WEIGHTS}"] + FINETUNE if finetune else []
    seconds = 60 * (minutes if minutes is not None else 2.0) if finetune or minutes is not None else None
    if seconds:
        base.append(f"train.total_nimg={max(16, int(seconds * IMG_PER_S) // 16 * 16)}")
    cfg = config_mod.load("demo", base + list(overrides or []))
    cfg.data.path = str(template)
    run_dir = out / "run"
    resume = bool(list((run_dir / "checkpoints").glob("ckpt-*.pt")))
    what = "fine-tuning the shipped weights of" if finetune else "training from scratch"
    budget = f"{seconds / 60:.1f} min" if seconds else f"{cfg.train.total_nimg} images"
    print(f"neurodiff demo: {what} a {cfg.data.depth_bins}-depth model on axial slices of {template.name} "
          f"({budget}){' — resuming' if resume else ''}", flush=True)
    summary = train(cfg, run_dir, resume=resume, progress=progress, max_seconds=seconds * 1.25 if seconds else None)
    cfg = summary["config"]
    from neurodiff.train.state import load_model

    model = load_model(run_dir)
    bins = cfg.data.depth_bins
    labels = [b for b in range(bins) for _ in range(per_depth)]
    seeds = [sample_seed(0, k) for k in range(len(labels))]
    print(f"sampling {per_depth} slices at each of {bins} depths "
          f"({cfg.sample.sampler}, {cfg.sample.steps} steps, guidance {cfg.sample.guidance})", flush=True)
    x = sample_batch(model.net, cfg, seeds, labels, None, cfg.sample.guidance, cfg.sample.steps,
                     cfg.sample.sampler, exact=False)
    # display orientation: NIfTI [X, Y] slices -> rows anterior-to-posterior, as radiology viewers show them
    disp = torch.rot90(x, 1, dims=(-2, -1))
    u8 = to_output(cfg, disp)                                      # template units (uint8), [N, 1, H, W]
    out.mkdir(parents=True, exist_ok=True)
    grid_path = out / "samples_by_depth.png"
    order = [b * per_depth + j for j in range(per_depth) for b in range(bins)]   # columns = depths
    io.write(grid_path, grid(u8[order, 0], ncol=bins)[None])
    stack_path = out / "generated_stack.tif"
    spacing = cfg.data.meta.get("spacing") or [1.0, 1.0]
    affine = cfg.data.meta.get("affine")
    ds = ImageDataset(cfg.data)
    box = ds.boxes[0][cfg.data.axis]
    z_mm = float(sum(affine[i][2] ** 2 for i in range(3)) ** 0.5) if affine else 1.0  # slicing axis, last
    z_step = (box.stop - box.start) * z_mm / bins   # mm between depth bins
    io.write(stack_path, u8[::per_depth, 0][None],
             io.ImageMeta(format="tiff", dtype="uint8", spacing=(z_step, spacing[1], spacing[0]), unit="mm"))
    real = torch.stack([ds[i]["x"] for i in range(len(ds))])
    real_labels = torch.stack([ds[i]["label"] for i in range(len(ds))])
    check = depth_check(real, real_labels, x, torch.tensor(labels), bins)
    _write_sets(out, cfg, u8, labels, to_output(cfg, torch.rot90(real, 1, dims=(-2, -1))), real_labels, model.digest)
    real_grid = out / "real_by_depth.png"
    picks = [int(torch.nonzero(real_labels == b)[len(torch.nonzero(real_labels == b)) // 2]) for b in range(bins)]
    io.write(real_grid, grid(to_output(cfg, torch.rot90(real[picks], 1, dims=(-2, -1)))[:, 0], ncol=bins)[None])
    minutes_taken = (time.time() - t0) / 60
    print(f"depth check: {check['exact']:.0%} of generated slices are nearest to the real mean slice of their "
          f"requested depth, {check['within_one']:.0%} within one depth", flush=True)
    print(f"done in {minutes_taken:.1f} min. Outputs:\n  {grid_path}  (columns: depth 0..{bins - 1}, "
          f"{per_depth} samples each)\n  {stack_path}  (one generated slice per depth; opens in Fiji/napari)\n"
          f"  {real_grid}  (a real slice of each depth, for comparison)\n  {out / 'samples'}, {out / 'real'}  "
          f"(every slice as PNG, for `neurodiff evaluate`)\n  {run_dir}  (run: checkpoints, "
          f"previews, metrics.jsonl)", flush=True)
    return {"grid": grid_path, "stack": stack_path, "real_grid": real_grid, "run_dir": run_dir,
            "depth_check": check, "minutes": minutes_taken}
