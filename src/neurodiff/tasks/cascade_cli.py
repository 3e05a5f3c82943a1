"""The `neurodiff cascade` command: a base model (or real low-res images) through super-resolution stages."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch

from neurodiff import dist
from neurodiff.data import io
from neurodiff.data.normalize import Normalizer
from neurodiff.errors import NeurodiffError
from neurodiff.tasks.generate import output_meta, resolve_label, sample_batch, sample_seed, to_output, write_manifest
from neurodiff.tasks.superres import cascade


def _lowres_inputs(folder: str, cfg, n: int) -> tuple[torch.Tensor, list[str]]:
    """Up to n images of a folder, normalised with the first stage's normaliser."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file() and io.is_image_file(p))[:n] if root.is_dir() else []
    if not files:
        raise NeurodiffError(f"--lowres {folder}: no image files")
    norm = Normalizer(**cfg.data.meta["normalizer"])
    xs = [torch.from_numpy(norm.normalize(io.read(p)[0])) for p in files]
    if len({tuple(x.shape) for x in xs}) != 1:
        raise NeurodiffError(f"--lowres {folder}: the images differ in size; give images of one size")
    return torch.stack(xs), [p.name for p in files]


def run_cascade(args, load_model) -> None:
    """``args`` from the CLI parser; ``load_model(path)`` -> LoadedModel (train/state.py, passed in: tasks sit below train)."""
    device = dist.init()   # the GPU when there is one
    stages = [load_model(p, device) for p in args.stages.split(",") if p]
    t0 = time.perf_counter()
    seeds = [sample_seed(args.seed, k) for k in range(args.n)]
    if args.base:
        base = load_model(args.base, device)
        label = resolve_label(base.cfg, args.label)
        sc = base.cfg.sample
        x = sample_batch(base.net, base.cfg, seeds, [label] * args.n, None,
                         args.guidance if args.guidance is not None else sc.guidance, args.steps or sc.steps,
                         sc.sampler, sc.exact, device=device)
        src, names = base.cfg, None
    else:
        x, names = _lowres_inputs(args.lowres, stages[0].cfg, args.n)
        seeds = seeds[:len(x)]
        src = stages[0].cfg
    outs = cascade(stages, x, src, seeds, args.steps, exact=stages[0].cfg.sample.exact, device=device)
    out = Path(args.out)
    rows = []
    for j, (stage, y) in enumerate(zip(stages, outs)):
        if j < len(stages) - 1 and not args.keep:
            continue
        folder = out if j == len(stages) - 1 else out / f"stage_{j + 1}"
        suffix, meta = output_meta(stage.cfg)
        for k, yk in enumerate(y):
            name = f"{Path(names[k]).name.split('.')[0]}{suffix}" if names else f"sample_{k:06d}{suffix}"
            io.write(folder / name, to_output(stage.cfg, yk), meta)
            if folder == out:
                rows.append({"file": name, "index": k, "seed": args.seed, "label": args.label or "",
                             "label_name": names[k] if names else "", "covariates": "", "guidance": args.guidance
                             or "", "sampler": stage.cfg.sample.sampler, "steps": args.steps or stage.cfg.sample.steps,
                             "model_digest": ",".join(s.digest for s in stages)})
    write_manifest(out / "manifest.csv", rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = "x".join(map(str, outs[-1].shape[2:]))
    print(f"wrote {len(rows)} images of {size} to {out} in {time.perf_counter() - t0:.0f} s "
          f"(peak memory {peak:.0f} MiB)")
