"""Latent diffusion data: every training item encoded once by the autoencoder and cached in the run folder.

The cache (``latents.safetensors``) is keyed by the autoencoder's weights digest and the data config, so a
resumed run reuses it and a changed autoencoder or data set re-encodes. Latents are the posterior means, shifted
and scaled to unit variance by constants measured here and stored in ``data.meta.latent``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from neurodiff import dist
from neurodiff.codec import measure_scale
from neurodiff.errors import NeurodiffError


class LatentDataset(torch.utils.data.Dataset):
    """Items ``{x: latent, label?, scalars?}`` of an ImageDataset, its conditions kept, its pixels encoded."""

    def __init__(self, base, codec, cache: Path, device="cpu", progress: bool = True):
        cfg = base.cfg
        for key in ("crop", "hflip", "vflip", "rot90", "sr_factor", "context_slices", "source"):
            if getattr(cfg, key):
                raise NeurodiffError(f"config field 'data.{key}': not available with data.codec (latents are encoded "
                                     "once from whole, un-augmented samples; use data.size to resize)")
        self.base, self.channels, self.class_names = base, codec.ae.z_channels, base.class_names
        self.num_source_channels = 0
        data_key = {k: v for k, v in vars(cfg).items() if k not in ("meta", "normalizer")}
        key = hashlib.sha256(json.dumps([codec.digest, data_key, base.normalizer.to_dict(),
                                         [str(e.file) for e in base.entries]], default=str).encode()).hexdigest()[:16]
        self.z = _load(cache, key)
        if self.z is None:
            self.z = _encode(base, codec, device, progress)
            if dist.is_main():
                _save(cache, self.z, key)
        shift, scale = measure_scale(self.z)
        self.z = (self.z - shift) / scale
        self.items = base.items
        self.meta = dict(base.meta, shape=list(self.z.shape[1:]), pixel_shape=base.meta["shape"],
                         latent={"codec": str(Path(codec.source).resolve()), "codec_digest": codec.digest,
                                 "shift": shift, "scale": scale, "factor": codec.factor})

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        item = self.base[(index, 0)] if self._conditioned() else {}
        out = {k: v for k, v in item.items() if k in ("label", "scalars")}
        out["x"] = self.z[index]
        return out

    def _conditioned(self) -> bool:
        cfg = self.base.cfg
        return bool(cfg.covariates or cfg.labels != "none" or cfg.depth_bins or cfg.depth_scalar)


@torch.no_grad()
def _encode(base, codec, device, progress: bool) -> torch.Tensor:
    from tqdm import tqdm

    out = []
    for i in tqdm(range(len(base)), desc="encoding latents", unit="item", disable=not progress):
        x = base[(i, 0)]["x"][None].to(device)
        out.append(codec.ae.encode(x)[0].float().cpu()[0])
    return torch.stack(out)


def _load(path: Path, key: str) -> torch.Tensor | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            return f.get_tensor("z")
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
        return None


def _save(path: Path, z: torch.Tensor, key: str) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({"z": z.contiguous()}, str(tmp), metadata={"key": key})
    os.replace(tmp, path)
