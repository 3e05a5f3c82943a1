"""Volumes slice by slice: a 2D model conditioned on depth and on the k preceding slices walks the depth axis.

The context of slice z is slices z-1 .. z-k (concatenated channels) plus one presence map per context slice, so
the first slice is drawn with no context (the model was trained with context dropout). Stacks are written as
multi-page TIFF with spacing, and also as NIfTI with the training data's affine where the data were NIfTI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neurodiff import dist
from neurodiff.data import io
from neurodiff.errors import NeurodiffError
from neurodiff.tasks.generate import _check_settings, sample_batch, sample_seed, to_output, write_sharded_manifest

MANIFEST_FIELDS = ["file", "index", "seed", "slices", "guidance", "sampler", "steps", "model_digest"]


def context_image(slices: torch.Tensor, present: list[bool]) -> torch.Tensor:
    """[K*C, *S] preceding slices (nearest first; -1 where absent) + K presence maps -> [K*(C+1), *S]."""
    k = len(present)
    c = slices.shape[0] // k
    flags = torch.tensor(present, dtype=torch.bool).repeat_interleave(c).view(-1, *[1] * (slices.ndim - 1))
    slices = torch.where(flags, slices, torch.full_like(slices, -1.0))
    maps = torch.tensor(present, dtype=slices.dtype).view(k, *[1] * (slices.ndim - 1)).expand(k, *slices.shape[1:])
    return torch.cat([slices, maps]).contiguous()


def depth_label(z: int, n_slices: int, bins: int) -> int:
    """The depth bin of slice z of n (the training data's rule)."""
    return min(int(z * bins / n_slices), bins - 1)


@torch.no_grad()
def sample_volumes(net, cfg, seeds: list[int], n_slices: int, guidance: float = 1.0, steps: int = 30,
                   sampler: str = "dpmpp_2m", exact: bool = True, device="cpu", bar=None) -> torch.Tensor:
    """[V, C, H, W, Z] stacks in normalised units; slice z of volume v uses seed ``sample_seed(seeds[v], z)``."""
    d = cfg.data
    k = d.context_slices
    if not k:
        raise NeurodiffError("this model was not trained with neighbouring-slice context (data.context_slices=0); "
                             "use a preset such as zebrafish-volume")
    shape = cfg.data.meta["shape"]
    v = len(seeds)
    done: list[torch.Tensor] = []   # generated slices, each [V, C, H, W]
    for z in range(n_slices):
        prev = [done[z - j] if z - j >= 0 else torch.full((v, *shape), -1.0) for j in range(1, k + 1)]
        present = [z - j >= 0 for j in range(1, k + 1)]
        image = torch.stack([context_image(torch.cat([p[i] for p in prev]), present) for i in range(v)])
        labels = [depth_label(z, n_slices, d.depth_bins)] * v if d.depth_bins else None
        scalars = [[z / max(n_slices - 1, 1)]] * v if d.depth_scalar else None
        x = sample_batch(net, cfg, [sample_seed(s, z) for s in seeds], labels, scalars, guidance, steps, sampler,
                         exact, image=image.to(device), device=device)
        done.append(x.cpu())
        if bar is not None:
            bar.update(1)
    return torch.stack(done, dim=-1)


def _volume_meta(cfg, n_slices: int) -> tuple[str, io.ImageMeta]:
    """Output suffix and metadata: NIfTI with the slice affine's axes (in-plane, then depth), else TIFF."""
    meta = cfg.data.meta
    native = meta.get("num_slices") or n_slices
    dz = (meta.get("slice_spacing") or 1.0) * native / n_slices
    if meta.get("format") == "nifti" and meta.get("affine"):
        affine = np.asarray(meta["affine"], dtype=float)
        affine[:3, 2] *= native / n_slices
        return ".nii.gz", io.ImageMeta(format="nifti", dtype=meta.get("dtype", "float32"), affine=affine.tolist())
    spacing = meta.get("spacing")
    return ".tif", io.ImageMeta(format="tiff", dtype=meta.get("dtype", "float32"),
                                spacing=(dz, *spacing) if spacing else None, unit=meta.get("unit"))


def generate_volumes(net, cfg, out_dir: str | Path, n: int, n_slices: int | None = None, seed: int = 0,
                     batch: int = 4, guidance: float = 1.0, steps: int = 30, sampler: str = "dpmpp_2m",
                     exact: bool = True, digest: str = "", device="cpu", progress: bool = True) -> list[dict]:
    """Write volumes 0..n-1 (this process's share under torchrun) and manifest.csv; finished files are kept."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_slices = n_slices or cfg.data.meta.get("num_slices")
    if not n_slices or n_slices < 1:
        raise NeurodiffError("--slices: give the number of slices per volume (the model does not record it)")
    suffix, meta = _volume_meta(cfg, n_slices)
    settings = {"seed": seed, "slices": n_slices, "guidance": guidance, "sampler": sampler, "steps": steps,
                "model_digest": digest, "exact": exact, "task": "volume"}
    if dist.is_main():
        from neurodiff.data.temps import remove_stale_temps

        remove_stale_temps(out_dir)
    _check_settings(out_dir, settings)
    mine = [k for k in range(n) if k % dist.world_size() == dist.rank()]
    todo = [k for k in mine if not (out_dir / f"volume_{k:04d}{suffix}").exists()]
    bar = None
    if progress and dist.is_main():
        from tqdm import tqdm

        bar = tqdm(total=len(todo) * n_slices, desc="slices", unit="slice")
    for start in range(0, len(todo), batch):
        ks = todo[start:start + batch]
        x = sample_volumes(net, cfg, [sample_seed(seed, k) for k in ks], n_slices, guidance, steps, sampler,
                           exact, device, bar)
        for k, xv in zip(ks, x):
            arr = to_output(cfg, xv)                       # [C, H, W, Z] in the data's units and dtype
            if suffix == ".tif":
                arr = np.moveaxis(arr, -1, 1)              # [C, Z, H, W]: one page per slice
            io.write(out_dir / f"volume_{k:04d}{suffix}", arr, meta)
    if bar:
        bar.close()
    rows = [{"file": f"volume_{k:04d}{suffix}", "index": k, "seed": seed, "slices": n_slices, "guidance": guidance,
             "sampler": sampler, "steps": steps, "model_digest": digest} for k in mine]
    write_sharded_manifest(out_dir, rows, MANIFEST_FIELDS)
    return rows
