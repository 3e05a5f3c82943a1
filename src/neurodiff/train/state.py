"""EMA, atomic checkpoints (loaded with weights_only=True), safetensors export and model loading."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import torch

from neurodiff import config as config_mod
from neurodiff.data.temps import _fsync_replace, atomic_torch_save
from neurodiff.errors import NeurodiffError
from neurodiff.nn.unet import UNet, build_unet


class EMA:
    """Exponential moving average of weights with a half-life in images (Karras et al. 2022, App. F)."""

    def __init__(self, net: torch.nn.Module):
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: torch.nn.Module, nimg: int, batch: int, halflife_nimg: float, rampup: float) -> None:
        hl = halflife_nimg if not rampup else min(halflife_nimg, nimg * rampup)
        beta = 0.5 ** (batch / max(hl, 1e-8)) if hl > 0 else 0.0
        for p_ema, p in zip(self.net.parameters(), net.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)
        for b_ema, b in zip(self.net.buffers(), net.buffers()):
            b_ema.copy_(b)


def checkpoint_path(run_dir: Path, nimg: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt-{nimg:012d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / "checkpoints").glob("ckpt-*.pt"))


def save_checkpoint(run_dir: Path, state: dict, keep: int = 2) -> Path:
    path = checkpoint_path(run_dir, state["nimg"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, path)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict:
    """Load training state with weights_only=True: a file carrying code is refused, never executed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise NeurodiffError(f"{path}: refused to load, the file holds more than weights "
                             f"({str(e).splitlines()[0][:120]})") from None
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise NeurodiffError(f"{path}: not a readable checkpoint ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not {"net", "ema", "nimg", "config"} <= set(state):
        raise NeurodiffError(f"{path}: not a neurodiff checkpoint (missing net/ema/nimg/config)")
    return state


def latest_checkpoint(run_dir: Path) -> dict | None:
    """The newest checkpoint that loads; a damaged newer one is reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            state = load_checkpoint(path)
            state["path"] = str(path)
            return state
        except NeurodiffError as e:
            print(f"warning: skipping {e}", flush=True)
    return None


def state_digest(state_dict: dict) -> str:
    """sha256 (16 hex) of the weights: names, shapes, dtypes and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.flatten().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def export_model(run_dir: Path, model_dir: Path) -> Path:
    """EMA weights of the newest checkpoint -> model_dir/model.safetensors + config.json."""
    from safetensors.torch import save_file

    state = latest_checkpoint(run_dir)
    if state is None:
        raise NeurodiffError(f"{run_dir}: no checkpoint to export (is this a training run folder?)")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in state["ema"].items()}
    meta = {"nimg": str(state["nimg"]), "digest": state_digest(tensors)}
    tmp = model_dir / f".model.safetensors.tmp-{os.getpid()}"
    save_file(tensors, str(tmp), metadata=meta)
    _fsync_replace(tmp, model_dir / "model.safetensors")
    cfg = json.loads(state["config"])
    latent = cfg.get("data", {}).get("meta", {}).get("latent")
    if latent:   # a latent diffusion model travels with its autoencoder
        src = Path(latent["codec"])
        if (src / "model.safetensors").is_file():
            (model_dir / "codec").mkdir(exist_ok=True)
            for name in ("model.safetensors", "config.json"):
                tmp = model_dir / "codec" / f".{name}.tmp-{os.getpid()}"
                shutil.copyfile(src / name, tmp)
                _fsync_replace(tmp, model_dir / "codec" / name)
        else:
            export_model(src, model_dir / "codec")
        latent["codec"] = "codec"     # relative to the model folder
    cfg_tmp = model_dir / f".config.json.tmp-{os.getpid()}"
    cfg_tmp.write_text(json.dumps(cfg, indent=2))
    _fsync_replace(cfg_tmp, model_dir / "config.json")
    return model_dir


def build_net(cfg: config_mod.RunConfig) -> torch.nn.Module:
    """The network a config describes: the KL autoencoder (train.objective 'autoencoder') or the UNet."""
    if cfg.train.objective == "autoencoder":
        from neurodiff.nn.autoencoder import build_autoencoder

        return build_autoencoder(cfg.autoencoder, cfg.model.in_channels)
    return build_unet(cfg.model)


class LoadedModel:
    """A net (EMA weights, eval mode), its full config and a digest of its weights."""

    def __init__(self, net: UNet, cfg: config_mod.RunConfig, digest: str, source: Path, nimg: int):
        self.net, self.cfg, self.digest, self.source, self.nimg = net, cfg, digest, source, nimg
        self._codec = None

    @property
    def codec(self):
        """The codec the model was trained with (Identity for pixel models), loaded on first use, on its device."""
        if self._codec is None:
            device = next(self.net.parameters()).device
            self._codec = codec_for(self.cfg, device, base=self.source)
        return self._codec


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A run folder (newest checkpoint's EMA) or an exported model folder (model.safetensors + config.json)."""
    path = Path(path)
    if not path.exists():
        raise NeurodiffError(f"{path}: no such run or model folder")
    if (path / "model.safetensors").is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not (path / "config.json").is_file():
            raise NeurodiffError(f"{path}: model.safetensors without config.json")
        try:
            raw = json.loads((path / "config.json").read_text())
            weights = load_file(str(path / "model.safetensors"))
        except (SafetensorError, ValueError, OSError) as e:
            raise NeurodiffError(f"{path}: cannot read model files ({str(e).splitlines()[0][:120]})") from None
        cfg, nimg = config_mod.from_dict(raw), -1
    else:
        state = latest_checkpoint(path)
        if state is None:
            raise NeurodiffError(f"{path}: neither a model folder (model.safetensors) nor a run with checkpoints")
        cfg, weights, nimg = config_mod.from_dict(json.loads(state["config"])), state["ema"], state["nimg"]
    net = build_net(cfg)
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise NeurodiffError(f"{path}: weights do not match the model config ({str(e).splitlines()[0][:160]})") from None
    return LoadedModel(net.to(device).eval().requires_grad_(False), cfg, state_digest(weights), path, nimg)


def load_codec(path: str | Path, device="cpu", slab: int | None = None) -> "KLCodec":
    """The autoencoder of a run or exported model folder (trained with ``neurodiff train-ae``), unit scale."""
    from neurodiff.codec import KLCodec

    model = load_model(path, device)
    if model.cfg.train.objective != "autoencoder":
        raise NeurodiffError(f"{path}: not an autoencoder (train it with `neurodiff train-ae`)")
    return KLCodec(model.net, slab=model.cfg.autoencoder.decode_slab if slab is None else slab,
                   digest=model.digest, source=str(path))


def codec_for(cfg, device="cpu", base: str | Path | None = None):
    """The codec a diffusion model was trained with: its autoencoder and stored latent constants, or Identity.
    A relative codec path (an exported model's ``codec/``) is taken relative to ``base``, the model folder."""
    from neurodiff.codec import Identity

    lat = cfg.data.meta.get("latent")
    if not lat:
        return Identity()
    path = Path(lat["codec"])
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if not path.exists():
        raise NeurodiffError(f"{path}: the autoencoder this latent model was trained with is missing")
    codec = load_codec(path, device)
    if lat.get("codec_digest") and codec.digest != lat["codec_digest"]:
        raise NeurodiffError(f"{lat['codec']}: this autoencoder's weights (digest {codec.digest}) differ from the ones "
                             f"the model was trained with ({lat['codec_digest']})")
    codec.shift, codec.scale = float(lat["shift"]), float(lat["scale"])
    return codec
