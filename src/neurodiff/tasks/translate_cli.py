"""The `neurodiff translate` command: every source image -> mean/median/std/MAD maps, in the input's format."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np

from neurodiff import dist
from neurodiff.data import io
from neurodiff.errors import NeurodiffError
from neurodiff.tasks.generate import write_manifest
from neurodiff.tasks.translate import translate_array

FLOAT_FORMATS = {"tiff", "nifti", "npy", "npz", "zarr"}
FIELDS = ["file", "index", "input", "samples", "seed", "steps", "sampler", "maps", "seconds", "model_digest"]


def _inputs(path: str) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and io.is_image_file(f)) if p.is_dir() else []
    if not files:
        raise NeurodiffError(f"--input {path}: no image files (a file or a folder of them)")
    return files


def _target(folder: Path, src: Path, meta: io.ImageMeta, as_float: bool) -> tuple[Path, io.ImageMeta]:
    """Output path and metadata: the input's format; spread maps go to TIFF where the format holds no floats."""
    name = io.stem(src.name)
    suffix = src.name[len(name):]
    fmt = meta.format
    if as_float and fmt not in FLOAT_FORMATS:
        fmt, suffix = "tiff", ".tif"
    return folder / f"{name}{suffix}", io.ImageMeta(format=fmt, dtype="float32", spacing=meta.spacing, unit=meta.unit,
                                                    affine=meta.affine)


def _cast(cfg, x, fmt: str):
    """Mean/median maps in the training target's dtype where the output format needs integers."""
    dtype = cfg.data.meta.get("dtype", "float32")
    if fmt in FLOAT_FORMATS:
        return x
    if dtype not in ("uint8", "uint16"):
        dtype = "uint16"
    info = np.iinfo(dtype)
    return x.round().clip(info.min, info.max).astype(dtype)


def _write(path: Path, x: np.ndarray, meta: io.ImageMeta) -> None:
    meta.dtype = x.dtype.name
    io.write(path, x, meta)


def run_translate(args, load_model) -> None:
    """``args`` from the CLI parser; ``load_model(path)`` -> LoadedModel (passed in: tasks sit below train)."""
    device = dist.init()   # the GPU when there is one
    model = load_model(args.model, device)
    files = _inputs(args.input)
    out = Path(args.out)
    rows, t_all = [], time.perf_counter()
    bar = None
    if not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=len(files), desc="translating", unit="image")
    for f in files:
        t0 = time.perf_counter()
        first = None
        source, meta = io.read(f)
        maps = translate_array(model, source, samples=args.samples, seed=args.seed, steps=args.steps,
                               sampler=args.sampler, batch=args.batch, exact=args.exact, tile=args.tile,
                               keep_samples=args.save_samples, device=device)
        for kind, x in maps.items():
            if kind == "samples":
                for k, xk in enumerate(x):
                    path, m = _target(out / "samples" / f"sample_{k:03d}", f, meta, False)
                    _write(path, _cast(model.cfg, xk, m.format), m)
                continue
            path, m = _target(out / kind, f, meta, kind in ("std", "mad"))
            first = path if kind == "mean" else first
            _write(path, _cast(model.cfg, x, m.format) if kind in ("mean", "median") else x, m)
        rows.append({"file": first.name, "index": len(rows), "input": str(f), "samples": args.samples, "seed": args.seed,
                     "steps": args.steps or model.cfg.sample.steps, "sampler": args.sampler or model.cfg.sample.sampler,
                     "maps": " ".join(k for k in maps), "seconds": f"{time.perf_counter() - t0:.2f}",
                     "model_digest": model.digest})
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    write_manifest(out / "manifest.csv", rows, FIELDS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kind = "1 prediction" if model.cfg.train.objective == "regression" else f"{args.samples} samples"
    print(f"translated {len(files)} image(s), {kind} each, into {out}/{{{','.join(k for k in maps)}}} in "
          f"{time.perf_counter() - t_all:.1f} s (peak memory {peak:.0f} MiB)")
