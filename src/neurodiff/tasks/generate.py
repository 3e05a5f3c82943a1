"""Generate: samples under conditions with CFG, written in the training data's format, plus manifest.csv.

Sample k is a function of (seed, k) alone: its noise comes from its own generator and, with ``exact``,
the net sees it on its own, so the file is the same for any batch size or number of processes.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import os
from pathlib import Path

import numpy as np
import torch

from neurodiff import dist
from neurodiff.data import io
from neurodiff.data.normalize import Normalizer
from neurodiff.diffusion.denoiser import guided, make_precond
from neurodiff.diffusion.samplers import get_sampler
from neurodiff.diffusion.schedules import sampling_sigmas
from neurodiff.errors import NeurodiffError
from neurodiff.nn.unet import Cond
from neurodiff.precision import autocast, resolve_precision

SUFFIX = {"png": ".png", "jpeg": ".png", "tiff": ".tif", "nifti": ".nii.gz", "npy": ".npy", "npz": ".npy"}
MANIFEST_FIELDS = ["file", "index", "seed", "label", "label_name", "covariates", "guidance", "sampler",
                   "steps", "model_digest"]


def sample_seed(seed: int, k: int) -> int:
    """Seed of sample k's generator: a hash of (seed, k), so neighbouring seeds share no samples."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{k}".encode()).digest()[:8], "little") >> 1


def resolve_label(cfg, label) -> int | None:
    """An int, a class name, or None -> class index (checked against the model)."""
    if label is None:
        return None
    m = cfg.model
    names = cfg.data.meta.get("class_names") or []
    if not m.num_classes:
        raise NeurodiffError(f"--label {label}: this model was trained without labels")
    if str(label) in names:
        return names.index(str(label))
    if isinstance(label, str) and not label.lstrip("-").isdigit():
        if label not in names:
            raise NeurodiffError(f"--label {label!r}: unknown class (classes: {', '.join(names) or 'indices only'})")
        return names.index(label)
    idx = int(label)
    if not 0 <= idx < m.num_classes:
        raise NeurodiffError(f"--label {idx}: out of range, expected 0..{m.num_classes - 1}")
    return idx


def make_cond(cfg, labels: list[int | None], scalars: list[list[float]] | None, device,
              image: torch.Tensor | None = None) -> Cond | None:
    m = cfg.model
    cond = Cond(image=image)
    if image is None and cfg.data.context_slices and m.cond_image_channels:
        # a slice-by-slice volume model sampled on its own: the "no context" input (the first slice's)
        shape = cfg.data.meta["shape"]
        k = cfg.data.context_slices
        empty = torch.cat([torch.full((k * shape[0], *shape[1:]), -1.0), torch.zeros(k, *shape[1:])])
        cond.image = empty.expand(len(labels), *empty.shape).to(device)
    if m.num_classes and any(v is not None for v in labels):
        cond.label = torch.tensor([v if v is not None else m.num_classes for v in labels], device=device)
        cond.drop = torch.tensor([v is None for v in labels], device=device)
    if scalars is not None:
        if not m.num_scalars:
            raise NeurodiffError("covariates were given but this model was trained without them")
        cond.scalars = torch.tensor(scalars, dtype=torch.float32, device=device)
        if cond.drop is None:
            cond.drop = torch.zeros(len(labels), dtype=torch.bool, device=device)
    if cond.drop is None and cond.image is not None:
        cond.drop = torch.zeros(len(labels), dtype=torch.bool, device=device)
    return cond if (cond.label is not None or cond.scalars is not None or cond.image is not None) else None


def parse_covariates(items: list[str]) -> dict:
    """``["age=70", ...]`` -> {"age": 70.0}."""
    covariates = {}
    for text in items:
        name, _, value = text.partition("=")
        try:
            covariates[name] = float(value)
        except ValueError:
            raise NeurodiffError(f"--covariate {text!r}: expected NAME=NUMBER") from None
    return covariates


def covariate_names(cfg) -> list[str]:
    """The model's scalar conditions by name, in order: the slice depth (if used), then the covariates."""
    depth = ["depth"] if cfg.data.depth_scalar and cfg.data.kind == "slices" else []
    return depth + list(cfg.data.meta.get("covariates") or [])


_warned: set = set()


def covariate_row(cfg, covariates: dict | None) -> list[float] | None:
    """{name: value} -> the model's scalar conditions in order (None when no covariates are given), standardised
    as in training; a value outside the training range is allowed with a warning (once per covariate)."""
    if not covariates:
        return None
    cov_names = covariate_names(cfg)
    missing = [c for c in cov_names if c not in covariates]
    unknown = [c for c in covariates if c not in cov_names]
    if unknown or missing:
        raise NeurodiffError(f"covariates: model expects {cov_names or 'none'}; unknown {unknown}, missing {missing}")
    stats = cfg.data.meta.get("covariate_stats") or {}
    row = []
    for c in cov_names:
        v = float(covariates[c])
        if not np.isfinite(v):
            raise NeurodiffError(f"covariate {c}: expected a finite number, got {covariates[c]!r}")
        q = stats.get(c)
        if q and not q["min"] <= v <= q["max"] and c not in _warned:
            _warned.add(c)
            print(f"warning: covariate {c}={v:g} is outside the training range [{q['min']:g}, {q['max']:g}]; "
                  "the model extrapolates", flush=True)
        row.append((v - q["mean"]) / q["std"] if q else v)
    return row


def read_covariate_table(path: str | Path, cfg) -> list[dict]:
    """A CSV with one column per covariate (other columns ignored) -> one {name: value} per row."""
    path = Path(path)
    if not path.is_file():
        raise NeurodiffError(f"{path}: no such covariate table")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    names = covariate_names(cfg)
    if not rows or not names:
        raise NeurodiffError(f"{path}: expected a header and rows with the columns {names or '(model has none)'}")
    missing = [c for c in names if c not in rows[0]]
    if missing:
        raise NeurodiffError(f"{path}: missing covariate columns {missing} (model expects {names})")
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            out.append({c: float(r[c]) for c in names})
        except (TypeError, ValueError):
            raise NeurodiffError(f"{path}, line {i}: covariates {names} must be numbers") from None
        if not all(np.isfinite(v) for v in out[-1].values()):
            raise NeurodiffError(f"{path}, line {i}: covariate is NaN or infinite")
    return out


@torch.no_grad()
def sample_batch(net, cfg, seeds: list[int], labels: list[int | None] | None = None,
                 scalars: list[list[float]] | None = None, guidance: float = 1.0, steps: int = 30,
                 sampler: str = "dpmpp_2m", exact: bool = True, shape: list[int] | None = None,
                 device="cpu", callback=None, image: torch.Tensor | None = None, tile: int | None = None,
                 overlap: int = 16, precision: str = "auto") -> torch.Tensor:
    """[len(seeds), C, *S] samples in normalised units (float32, clamped to [-1, 1]).

    ``image``: [N, Ci, *S] concatenated conditioning; ``tile``: evaluate the net in overlapping tiles of this
    size (blended per step, tiling.py) when the sample is larger.
    """
    n = len(seeds)
    labels = labels if labels is not None else [None] * n
    shape = shape or cfg.data.meta.get("shape")
    if not shape:
        raise NeurodiffError("the model config has no data.meta.shape: give the sample size explicitly")
    precond = make_precond(cfg.diffusion)
    d = cfg.diffusion
    sigmas = sampling_sigmas(precond, steps, d.sigma_min, d.sigma_max, d.rho).to(device)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    noise = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)
    if getattr(precond, "sigma_table", None) is not None:  # DDPM's x_T ~ N(0, I) in VP space
        noise = noise * float((1 + sigmas[0] ** 2).sqrt() / sigmas[0])
    D = build_denoiser(net, precond, make_cond(cfg, labels, scalars, device, image), n, guidance, exact,
                       shape, tile, overlap)
    run = get_sampler(sampler)
    with sampling_autocast(precision, device):
        x = run(lambda x, s: D(x.float(), s), noise, sigmas, generator=gens, callback=callback)
    return x.float().clamp(-1, 1)


def sampling_autocast(precision: str, device):
    """The network's precision while sampling (``--precision``): auto = bf16 autocast on GPUs, exact float32
    elsewhere; fp32; bf16 (also on CPUs with native bf16, e.g. AVX-512 BF16 or AMX, about twice as fast there;
    float32 with a warning on CPUs that would emulate it)."""
    return autocast(resolve_precision(precision, device, "--precision"), device)


def build_denoiser(net, precond, cond: Cond | None, n: int, guidance: float, exact: bool, shape: list[int],
                   tile: int | None = None, overlap: int = 16):
    """``D(x, sigma)`` for a batch of n: guidance, one sample at a time when ``exact``, tiles when larger."""
    def make_D(c: Cond | None):
        if not exact:
            return guided(net, precond, c, guidance)
        denoisers = [guided(net, precond, None if c is None else c.select([i]), guidance) for i in range(n)]
        return lambda x, sigma: torch.cat([denoisers[i](x[i:i + 1], sigma[i:i + 1]) for i in range(n)])

    if tile and any(size > tile for size in shape[1:]):
        from neurodiff.tiling import tiled

        def D_tile(x, sigma, region):
            c = cond
            if cond is not None and cond.image is not None:
                c = Cond(cond.label, cond.scalars, cond.image[(slice(None), slice(None), *region)], cond.drop)
            return make_D(c)(x, sigma)

        return tiled(D_tile, tile, overlap)
    return make_D(cond)


def output_meta(cfg) -> tuple[str, io.ImageMeta]:
    """File suffix and metadata for writing samples like the training data."""
    meta = cfg.data.meta
    fmt = meta.get("format", "npy")
    return SUFFIX.get(fmt, ".npy"), io.ImageMeta(
        format=fmt, dtype=meta.get("dtype", "float32"), spacing=tuple(meta["spacing"]) if meta.get("spacing") else None,
        unit=meta.get("unit"), affine=meta.get("affine"))


def to_output(cfg, x: torch.Tensor) -> np.ndarray:
    """Normalised [C, *S] -> the training data's units and dtype."""
    nm = cfg.data.meta.get("normalizer")
    if not nm:
        return x.cpu().numpy()
    dtype = cfg.data.meta.get("dtype", "float32")
    if cfg.data.meta.get("format") in ("png", "jpeg") and dtype not in ("uint8", "uint16"):
        dtype = "uint16"
    return Normalizer(**nm).denormalize(x, dtype)


def write_manifest(path: Path, rows: list[dict], fields: list[str] = MANIFEST_FIELDS) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: int(r["index"])))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def read_manifest(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def generate(net, cfg, out_dir: str | Path, n: int, seed: int = 0, batch: int = 16, label=None,
             covariates: dict | list[dict] | None = None, guidance: float = 1.0, steps: int = 30,
             sampler: str = "dpmpp_2m", exact: bool = True, digest: str = "", device="cpu", progress: bool = True,
             codec=None) -> list[dict]:
    """Write samples 0..n-1 (this process's share under torchrun) and manifest.csv; skips finished files.

    ``label``: None (unconditional, or cycle through classes with 'all'), an index or a class name.
    ``covariates``: {name: value} for every covariate the model was trained with, or a list of them (sample k
    takes entry k mod the list's length). ``codec``: decodes latent samples (latent diffusion).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix, meta = output_meta(cfg)
    names = cfg.data.meta.get("class_names") or []
    table = covariates if isinstance(covariates, list) else [covariates] if covariates else []
    rows_cov = [covariate_row(cfg, c) for c in table]
    if label == "all":
        if not cfg.model.num_classes:
            raise NeurodiffError("--label all: this model was trained without labels")
        labels = [k % cfg.model.num_classes for k in range(n)]
    else:
        fixed = resolve_label(cfg, label)
        labels = [fixed] * n
    if dist.is_main():
        from neurodiff.data.temps import remove_stale_temps

        remove_stale_temps(out_dir)     # left by a killed run; the finished files are whole
    settings = {"seed": seed, "label": label, "covariates": table, "guidance": guidance,
                "sampler": sampler, "steps": steps, "model_digest": digest, "exact": exact}
    _check_settings(out_dir, settings)
    if guidance != 1.0 and labels[0] is None and not table and dist.is_main():
        print("warning: --guidance has no effect without a label or covariates (unconditional sampling)", flush=True)
    mine = [k for k in range(n) if k % dist.world_size() == dist.rank()]
    todo = [k for k in mine if not (out_dir / f"sample_{k:06d}{suffix}").exists()]
    rows: dict[int, dict] = {}
    bar = None
    if progress and dist.is_main():
        from tqdm import tqdm

        import sys

        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="sampling", unit="sample",
                   mininterval=0.5 if sys.stderr.isatty() else 15.0)
    for start in range(0, len(todo), batch):
        ks = todo[start:start + batch]
        x = sample_batch(net, cfg, [sample_seed(seed, k) for k in ks], [labels[k] for k in ks],
                         [rows_cov[k % len(rows_cov)] for k in ks] if rows_cov else None, guidance, steps, sampler,
                         exact, device=device)
        if codec is not None:
            x = torch.cat([codec.decode(xi[None]) for xi in x]).clamp(-1, 1)
        for k, xi in zip(ks, x):
            io.write(out_dir / f"sample_{k:06d}{suffix}", to_output(cfg, xi), meta)
        if bar:
            bar.update(len(ks))
    if bar:
        bar.close()
    for k in mine:
        lab = labels[k]
        rows[k] = {"file": f"sample_{k:06d}{suffix}", "index": k, "seed": seed, "label": "" if lab is None else lab,
                   "label_name": names[lab] if lab is not None and lab < len(names) else "",
                   "covariates": ";".join(f"{c}={table[k % len(table)][c]:g}" for c in covariate_names(cfg))
                   if table else "",
                   "guidance": guidance, "sampler": sampler, "steps": steps, "model_digest": digest}
    write_sharded_manifest(out_dir, list(rows.values()))
    return [rows[k] for k in sorted(rows)]


def write_sharded_manifest(out_dir: Path, rows: list[dict], fields: list[str] = MANIFEST_FIELDS) -> None:
    """manifest.csv of this process's rows; under torchrun every rank writes its part and rank 0 merges them."""
    part = out_dir / (f".manifest.rank{dist.rank()}.csv" if dist.world_size() > 1 else "manifest.csv")
    write_manifest(part, rows, fields)
    if dist.world_size() > 1:
        dist.barrier()
        if dist.is_main():
            merged = []
            for r in range(dist.world_size()):
                p = out_dir / f".manifest.rank{r}.csv"
                merged += read_manifest(p)
                p.unlink(missing_ok=True)
            write_manifest(out_dir / "manifest.csv", merged, fields)
        dist.barrier()


def _check_settings(out_dir: Path, settings: dict) -> None:
    """A rerun into the same folder completes the set only with the same settings; else it is an error."""
    import json

    path = out_dir / ".neurodiff-sample.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in settings if old.get(k) != settings[k])
        if diff:
            raise NeurodiffError(f"{out_dir}: holds samples made with other settings ({', '.join(diff)}); "
                                 "use a new --out or the same settings")
    elif dist.is_main():
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(settings))
        os.replace(tmp, path)
    dist.barrier()


def grid(images: np.ndarray, ncol: int, pad: int = 2) -> np.ndarray:
    """[N, H, W] uint8 -> one [rows*H, ncol*W] mosaic with a dark border."""
    n, h, w = images.shape
    nrow = -(-n // ncol)
    out = np.zeros((nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    return out


def to_uint8_display(x: torch.Tensor) -> np.ndarray:
    """Normalised [N, C, H, W] (or a 3D volume's middle slice) -> [N, H, W] uint8 for previews."""
    if x.ndim == 5:
        x = x[:, :, x.shape[2] // 2]
    x = x[:, 0] if x.shape[1] != 3 else x.mean(1)
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
