"""Offline feature networks for distribution metrics: a small domain network trained here, or the user's file.

Default: ``FeatureNet`` trained by ``neurodiff train-features`` on the real data (self-supervised contrastive
views, plus a classification head when labels exist) and saved as one safetensors file whose metadata holds
its config and intensity normaliser, so numbers stay comparable across runs. 3D volumes use the 2.5D
protocol: the three central orthogonal slices go through the 2D network and their features are concatenated.
A TorchScript file ([N, C, H, W] -> [N, D]) may be given instead. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from neurodiff.data.normalize import Normalizer
from neurodiff.errors import NeurodiffError
from neurodiff.nn.layers import conv, norm


class FeatureNet(nn.Module):
    """Small CNN: [N, C, size, size] in [-1, 1] -> [N, out_dim] features (global mean + std pooled)."""

    def __init__(self, in_channels: int = 1, width: int = 32, out_dim: int = 128, num_classes: int = 0):
        super().__init__()
        chans = [width, 2 * width, 4 * width, 4 * width]
        layers, c = [conv(2, in_channels, width), norm(width, 8), nn.SiLU()], width
        for w in chans:
            layers += [conv(2, c, w, 3, stride=2), norm(w, 8), nn.SiLU(), conv(2, w, w), norm(w, 8), nn.SiLU()]
            c = w
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(2 * c, out_dim)
        self.head = nn.Sequential(nn.Linear(out_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, 64))  # contrastive
        self.classifier = nn.Linear(out_dim, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x).flatten(2)
        return self.proj(torch.cat([h.mean(-1), h.std(-1, correction=0)], dim=1))


class Features:
    """A loaded feature extractor: ``features(x_normalised [N, C, *S]) -> [N, D]`` plus its normaliser."""

    def __init__(self, fn, size: int, normalizer: Normalizer | None, in_channels: int, source: str):
        self.fn, self.size, self.normalizer, self.in_channels, self.source = fn, size, normalizer, in_channels, source

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """Features of normalised images [N, C, H, W] or volumes [N, C, D, H, W] (2.5D)."""
        if x.ndim == 5:  # 2.5D: central axial, coronal and sagittal slices, features concatenated
            d, h, w = x.shape[2:]
            views = [x[:, :, d // 2], x[:, :, :, h // 2], x[:, :, :, :, w // 2]]
            return torch.cat([self(v, batch) for v in views], dim=1)
        out = []
        for i in range(0, len(x), batch):
            xi = x[i:i + batch].float()
            if self.size:    # size 0: the network takes any size (a user's classifier)
                xi = F.interpolate(xi, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                   antialias=True)
            try:
                out.append(self.fn(xi).float())
            except RuntimeError:
                if xi.shape[1] != 1:
                    raise
                out.append(self.fn(xi.expand(-1, 3, -1, -1)).float())   # gray into an RGB network
        return torch.cat(out)


def save_features(net: FeatureNet, path: str | Path, meta: dict) -> None:
    """One safetensors file: the weights and, in its metadata, the config and normaliser (atomic write)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp), metadata={"neurodiff_features": json.dumps(meta)})
    os.replace(tmp, path)


def load_features(path: str | Path, device="cpu") -> Features:
    """A neurodiff feature file (.safetensors), a torch.export program (.pt2) or a TorchScript module (.pt, .ts)."""
    path = Path(path)
    if not path.is_file():
        raise NeurodiffError(f"{path}: no such features file")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads((f.metadata() or {}).get("neurodiff_features", "null"))
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - any failure to parse is the same answer for the user
            raise NeurodiffError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:100]})") from None
        if not meta:
            raise NeurodiffError(f"{path}: safetensors without neurodiff feature metadata "
                                 "(only networks saved by `neurodiff train-features` are known)")
        net = FeatureNet(meta["in_channels"], meta["width"], meta["out_dim"], meta.get("num_classes", 0))
        net.load_state_dict(state)
        net.eval().to(device)
        return Features(net, meta["size"], Normalizer(**meta["normalizer"]), meta["in_channels"], str(path))
    if path.suffix == ".pt2":  # a torch.export program
        try:
            module = torch.export.load(str(path)).module()
        except Exception as e:  # noqa: BLE001
            raise NeurodiffError(f"{path}: not a torch.export program ({str(e).splitlines()[0][:100]})") from None
        return Features(module, 64, None, 0, str(path))
    try:
        module = torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:  # noqa: BLE001
        raise NeurodiffError(f"{path}: not a TorchScript module ({str(e).splitlines()[0][:100]})") from None
    return Features(module, 299 if "incep" in path.name.lower() else 64, None, 0, str(path))


def load_classifier(path: str | Path, device="cpu") -> Features:
    """A classifier for classification flips: ``clf(x [N, C, H, W]) -> logits [N, K]``. Either a train-features
    file with a class head (trained on labelled images) or a TorchScript / torch.export module that takes the image
    whole, min-max scaled to [-1, 1] (``normalizer`` None: the caller scales)."""
    f = load_features(path, device)
    if isinstance(f.fn, FeatureNet):
        net = f.fn
        if net.classifier is None:
            raise NeurodiffError(f"{path}: this feature network has no class head (train-features saw no labels); "
                                 "train it on class sub-folders to use it as a classifier")
        return Features(lambda x: net.classifier(net(x)), f.size, f.normalizer, f.in_channels, f.source)
    return Features(f.fn, 0, None, 0, f.source)


def _views(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random augmented view per image: resized crop, flips, quarter turn, intensity jitter, noise."""
    n, _, h, w = x.shape
    out = []
    for i in range(n):
        s = math.sqrt(0.4 + 0.6 * torch.rand(1, generator=g).item())
        ch, cw = max(4, int(h * s)), max(4, int(w * s))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        v = F.interpolate(x[i:i + 1, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                          align_corners=False)
        if torch.rand(1, generator=g) < 0.5:
            v = v.flip(-1)
        if torch.rand(1, generator=g) < 0.5:
            v = v.flip(-2)
        v = torch.rot90(v, int(torch.randint(0, 4, (1,), generator=g)), dims=(-2, -1))
        a, b = 0.8 + 0.4 * torch.rand(1, generator=g), 0.2 * (torch.rand(1, generator=g) - 0.5)
        v = v * a + b + 0.05 * torch.rand(1, generator=g) * torch.randn(v.shape, generator=g)
        out.append(v)
    return torch.cat(out)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy (Chen et al. 2020) between two views' embeddings."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / tau
    n = len(z1)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def train_features(x: torch.Tensor, labels: torch.Tensor | None, normalizer: Normalizer, out: str | Path,
                   steps: int = 1000, batch: int = 64, width: int = 32, out_dim: int = 128, seed: int = 0,
                   progress: bool = True) -> dict:
    """Train a FeatureNet on normalised 2D images x [N, C, size, size] (contrastive + CE if labels); save it."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n_cls = int(labels.max()) + 1 if labels is not None else 0
    net = FeatureNet(x.shape[1], width, out_dim, n_cls)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc="training features", unit="step")
    losses = []
    for step in range(steps):
        idx = torch.randperm(len(x), generator=g)[:batch]   # no duplicates: they would be false negatives
        xb = x[idx]
        f1, f2 = net(_views(xb, g)), net(_views(xb, g))
        loss = nt_xent(net.head(f1), net.head(f2))
        if net.classifier is not None:
            loss = loss + 0.5 * (F.cross_entropy(net.classifier(f1), labels[idx]) +
                                 F.cross_entropy(net.classifier(f2), labels[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    if bar:
        bar.close()
    meta = {"in_channels": x.shape[1], "width": width, "out_dim": out_dim, "num_classes": n_cls,
            "size": x.shape[-1], "normalizer": normalizer.to_dict(), "steps": steps, "seed": seed,
            "num_images": len(x), "first_loss": losses[0], "last_loss": losses[-1]}
    save_features(net.eval(), out, meta)
    return meta
