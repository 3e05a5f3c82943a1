"""Typed run configuration: sections as dataclasses, validated on load, errors name the field.

A config is data (YAML), never code. Presets live in ``neurodiff/configs/*.yaml``; ``--set a.b=v``
overrides any field. Every checkpoint and exported model carries the full resolved config.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from neurodiff.errors import NeurodiffError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class NormalizerConfig:
    kind: str = "minmax"            # minmax | percentile | range (fixed lo/hi, e.g. the dtype's range)
    lo: float | None = None         # fitted on the data when None (minmax, percentile)
    hi: float | None = None         # upper end of the intensity range mapped to +1
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])  # percentile: low/high clip points


@dataclass
class DataConfig:
    path: str = ""                  # folder or file; set by --data
    kind: str = "images"            # images | volumes | slices
    axis: int = 0                   # slices: spatial axis to slice along (0 = first spatial axis)
    depth_bins: int = 0             # slices: >0 -> depth class label in [0, depth_bins); 0 -> no depth label
    depth_scalar: bool = False      # slices: add the normalised slice position in [0, 1] as a covariate
    context_slices: int = 0         # slices: condition on this many preceding slices (slice-by-slice volumes)
    context_drop_prob: float = 0.1  # slices: chance the context is withheld in training, so a stack can start
    sr_factor: int = 0              # super-resolution stage: input = sample downsampled (area) by this, upsampled back
    sr_noise_aug: float = 0.2       # super-resolution: training noise-augmentation level, uniform in [0, this]
    source: str = ""                # paired data: folder of source images (relative to data.path), matched by name
    target: str = ""                # paired data: folder of target images (relative to data.path); "" = data.path
    source_channels: list[int | str] = field(default_factory=list)  # paired, one file: source channels (index/name)
    codec: str = ""                 # latent diffusion: autoencoder run or model folder; latents cached in the run
    min_foreground: float = 0.0     # slices: skip slices with a smaller fraction of voxels above the minimum
    crop_foreground: bool = False   # crop every file to the bounding box of voxels above its minimum
    labels: str = "none"            # none | folders | manifest
    manifest: str = ""              # CSV with columns file,label[,covariate...]; relative to the data folder
    covariates: list[str] = field(default_factory=list)  # manifest columns used as scalar covariates
    channels: int = 0               # expected channels; 0 = take from the first file
    size: list[int] = field(default_factory=list)   # resize every sample to this spatial size (empty: keep)
    resize_mode: str = "stretch"    # stretch | fit (keep the aspect ratio, pad with the background)
    crop: list[int] = field(default_factory=list)   # random crop of this size (volumes: 3D crops)
    hflip: bool = False             # random left-right flips
    vflip: bool = False             # random up-down flips
    rot90: bool = False             # random quarter turns in the last two axes
    normalizer: NormalizerConfig = field(default_factory=NormalizerConfig)
    meta: dict = field(default_factory=dict)  # written by training: format, dtype, spacing, affine, classes, normaliser


@dataclass
class ModelConfig:
    dims: int = 2                   # 2 (images, slices) or 3 (volumes)
    in_channels: int = 0            # 0 = data channels
    out_channels: int = 0           # 0 = in_channels
    channels: int = 32              # base width
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])   # width per level, x channels
    num_res_blocks: int | list[int] = 1   # residual blocks per level: one int, or one per level (e.g. [1, 2, 2, 2])
    attn_levels: list[int] = field(default_factory=lambda: [2])   # level indices with self-attention
    num_heads: int = 4              # attention heads
    num_classes: int = 0            # labels in [0, num_classes); 0 = no label embedding
    num_scalars: int = 0            # continuous covariates; 0 = none
    cond_image_channels: int = 0    # channels concatenated to the input (super-res, translation, volumes)
    dropout: float = 0.0            # dropout in residual blocks
    groups: int = 8                 # GroupNorm groups (capped by the width)
    checkpointing: bool = False     # gradient checkpointing of residual blocks
    channels_last: bool = True      # NHWC / NDHWC memory format (10-15% faster convolutions on CPUs, bench/NOTES.md)
    scalar_channels: bool = False   # covariates also as constant input channels (concatenation)
    cross_attn: bool = False        # covariates also as cross-attention tokens at the attention levels
    zero_init: bool = False         # ADM-style zero-initialised residual branches and output (slower start, bench/NOTES.md)


@dataclass
class AutoencoderConfig:
    dims: int = 3                   # 2 (images) or 3 (volumes)
    channels: int = 32              # base width
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])   # 3 levels: 4x per axis, 4 levels: 8x
    num_res_blocks: int = 1         # residual blocks per level
    z_channels: int = 4             # latent channels
    groups: int = 8                 # GroupNorm groups (capped by the width)
    checkpointing: bool = False     # gradient checkpointing of residual blocks (3D memory)
    kl_weight: float = 1e-6         # KL term (per latent element, summed) weight
    ssim_weight: float = 0.2        # (1 - SSIM) weight, next to the L1 term (weight 1)
    adv_weight: float = 0.05        # patch-adversarial (hinge) weight for the decoder; 0 = no discriminator
    adv_start_nimg: int = 2000      # images seen before the discriminator starts (warm-up)
    disc_channels: int = 32         # PatchGAN width
    perceptual_weight: float = 0.0  # feature-matching term; needs perceptual_features
    perceptual_features: str = ""   # local feature file (train-features output or TorchScript); never downloaded
    decode_slab: int = 0            # latent slab thickness for decoding large volumes (0 = whole)


@dataclass
class VPConfig:
    T: int = 1000                   # number of discrete timesteps
    beta_schedule: str = "linear"   # linear | cosine
    beta_start: float = 1e-4        # linear schedule: first beta
    beta_end: float = 0.02          # linear schedule: last beta
    prediction: str = "eps"         # eps | v | x0


@dataclass
class DiffusionConfig:
    precond: str = "edm"            # edm | vp
    sigma_data: float = 0.5         # EDM: standard deviation of the (normalised) data
    P_mean: float = -1.2            # EDM training sigma density: ln(sigma) ~ N(P_mean, P_std^2)
    P_std: float = 1.2              # EDM: spread of ln(sigma) in training
    sigma_min: float = 0.002        # EDM sampling range
    sigma_max: float = 80.0         # EDM: largest sampling noise level
    rho: float = 7.0                # EDM: schedule curvature (Karras et al. eq. 5)
    vp: VPConfig = field(default_factory=VPConfig)
    loss: str = "mse"               # mse | l1 | huber
    huber_delta: float = 1.0        # Huber loss: quadratic below this error
    weighting: str = "auto"         # auto (edm for EDM, uniform for VP) | edm | min_snr | uniform
    min_snr_gamma: float = 5.0      # min-SNR weighting: the SNR cap
    cond_drop_prob: float = 0.1     # classifier-free guidance: drop label/covariates with this probability


@dataclass
class TrainConfig:
    batch: int = 16                 # global batch (split across processes)
    lr: float = 2e-4                # AdamW learning rate after warm-up
    weight_decay: float = 0.0       # AdamW weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    warmup_nimg: int = 2000         # linear learning-rate warm-up, in images
    total_nimg: int = 100_000       # training length, in images
    grad_clip: float = 1.0          # max gradient norm; 0 = off
    ema_halflife_nimg: int = 5000   # EMA half-life, in images
    ema_rampup: float = 0.05        # EMA half-life is at most this fraction of images seen (0 = off)
    precision: str = "auto"         # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    seed: int = 0                   # all training randomness derives from (seed, step)
    workers: int = 0                # DataLoader worker processes
    log_every_nimg: int = 1000      # metrics.jsonl (and TensorBoard) interval
    preview_every_nimg: int = 10_000  # preview grid PNG interval
    checkpoint_every_nimg: int = 10_000  # checkpoint interval (atomic writes)
    keep_checkpoints: int = 2       # newest checkpoints kept
    nan_policy: str = "stop"        # stop (keep the last checkpoint) | skip (count and skip the step)
    init_from: str = ""             # start from these weights (a model or run folder): fine-tuning
    eval_every_nimg: int = 0        # KID/FD of EMA samples every this many images (0 = off; needs eval_features)
    eval_features: str = ""         # feature file from `neurodiff train-features` (or TorchScript) for eval
    eval_samples: int = 256         # generated and real samples per evaluation (at most 1000)
    eval_steps: int = 10            # sampler steps (dpmpp_2m) per evaluation sample
    objective: str = "diffusion"    # diffusion | regression (the deterministic paired baseline: same net, L1/L2)


@dataclass
class SampleConfig:
    sampler: str = "dpmpp_2m"       # euler (= ddim) | heun | dpmpp_2m | ancestral
    steps: int = 30                 # sampler steps
    guidance: float = 1.0           # 1 = off
    batch: int = 16                 # samples per batch
    exact: bool = True              # run the net one sample at a time: sample k is bit-identical for any batch
    sr_aug_level: float = 0.1       # super-resolution: noise level added to the upsampled input (given to the net)
    tile: int = 0                   # super-resolution: tile size for outputs larger than this (0 = the training crop)
    overlap: int = 16               # tile overlap, blended per step


@dataclass
class RunConfig:
    name: str = "run"               # a label for the run
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)


CHOICES = {
    "data.kind": ("images", "volumes", "slices"),
    "data.labels": ("none", "folders", "manifest"),
    "data.resize_mode": ("stretch", "fit"),
    "data.normalizer.kind": ("minmax", "percentile", "range"),
    "model.dims": (2, 3),
    "diffusion.precond": ("edm", "vp"),
    "diffusion.vp.beta_schedule": ("linear", "cosine"),
    "diffusion.vp.prediction": ("eps", "v", "x0"),
    "diffusion.loss": ("mse", "l1", "huber"),
    "diffusion.weighting": ("auto", "edm", "min_snr", "uniform"),
    "train.precision": ("auto", "fp32", "bf16"),
    "train.nan_policy": ("stop", "skip"),
    "train.objective": ("diffusion", "regression", "autoencoder"),
    "autoencoder.dims": (2, 3),
    "sample.sampler": ("euler", "ddim", "heun", "dpmpp_2m", "ancestral"),
}
POSITIVE = ("model.channels", "model.num_heads", "model.groups", "train.batch", "train.total_nimg",
            "train.lr", "train.log_every_nimg", "train.preview_every_nimg", "train.checkpoint_every_nimg",
            "train.keep_checkpoints", "sample.steps", "sample.batch", "diffusion.sigma_data",
            "diffusion.sigma_min", "diffusion.sigma_max", "diffusion.vp.T",
            "autoencoder.channels", "autoencoder.num_res_blocks", "autoencoder.z_channels", "autoencoder.groups",
            "autoencoder.disc_channels")
NON_NEGATIVE = ("model.num_classes", "model.num_scalars", "model.in_channels",
                "model.out_channels", "model.cond_image_channels", "data.depth_bins", "data.context_slices", "data.sr_factor",
                "data.sr_noise_aug", "sample.sr_aug_level", "sample.tile", "sample.overlap", "data.channels",
                "train.warmup_nimg", "train.grad_clip", "train.ema_halflife_nimg", "train.workers",
                "train.weight_decay", "diffusion.min_snr_gamma", "diffusion.huber_delta", "autoencoder.kl_weight",
                "autoencoder.ssim_weight", "autoencoder.adv_weight", "autoencoder.adv_start_nimg",
                "autoencoder.perceptual_weight", "autoencoder.decode_slab")
FRACTIONS = ("data.context_drop_prob", "diffusion.cond_drop_prob", "model.dropout", "data.min_foreground", "train.ema_rampup")


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if tp is Any:
        return True
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def _build(cls, raw: Any, prefix: str):
    if not isinstance(raw, dict):
        raise NeurodiffError(f"config field '{prefix or 'root'}': expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise NeurodiffError(f"unknown config field '{where}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        where = f"{prefix}.{f.name}" if prefix else f.name
        value, tp = raw[f.name], hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, value, where)
            continue
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if typing.get_origin(tp) is list and typing.get_args(tp) == (float,) and isinstance(value, list):
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        if not _type_ok(value, tp):
            tname = getattr(tp, "__name__", str(tp).replace("typing.", ""))
            raise NeurodiffError(f"config field '{where}': expected {tname}, got {value!r}")
        kwargs[f.name] = value
    return cls(**kwargs)


def _get(cfg: RunConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: RunConfig) -> RunConfig:
    """Range checks beyond types; raises NeurodiffError naming the field."""
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise NeurodiffError(f"config field '{key}': expected one of {list(allowed)}, got {_get(cfg, key)!r}")
    for key in POSITIVE:
        if not _get(cfg, key) > 0:
            raise NeurodiffError(f"config field '{key}': expected a value > 0, got {_get(cfg, key)!r}")
    for key in NON_NEGATIVE:
        if _get(cfg, key) < 0:
            raise NeurodiffError(f"config field '{key}': expected a value >= 0, got {_get(cfg, key)!r}")
    for key in FRACTIONS:
        if not 0.0 <= _get(cfg, key) <= 1.0:
            raise NeurodiffError(f"config field '{key}': expected a value in [0, 1], got {_get(cfg, key)!r}")
    m = cfg.model
    if not m.channel_mult or any(c <= 0 for c in m.channel_mult):
        raise NeurodiffError(f"config field 'model.channel_mult': expected positive integers, got {m.channel_mult}")
    blocks = [m.num_res_blocks] if isinstance(m.num_res_blocks, int) else m.num_res_blocks
    if (not isinstance(m.num_res_blocks, int) and len(blocks) != len(m.channel_mult)) or min(blocks, default=0) < 1:
        raise NeurodiffError(f"config field 'model.num_res_blocks': expected an int >= 1 or one per level "
                             f"({len(m.channel_mult)} levels), got {m.num_res_blocks}")
    for lvl in m.attn_levels:
        if not 0 <= lvl < len(m.channel_mult):
            raise NeurodiffError(f"config field 'model.attn_levels': level {lvl} outside 0..{len(m.channel_mult) - 1}")
    for key in ("data.size", "data.crop"):
        v = _get(cfg, key)
        if v and (len(v) not in (2, 3) or any(s <= 0 for s in v)):
            raise NeurodiffError(f"config field '{key}': expected 2 or 3 positive sizes, got {v}")
    if cfg.diffusion.sigma_min >= cfg.diffusion.sigma_max:
        raise NeurodiffError("config field 'diffusion.sigma_min': must be below diffusion.sigma_max")
    if cfg.data.sr_factor and cfg.data.context_slices:
        raise NeurodiffError("config field 'data.sr_factor': cannot be combined with data.context_slices")
    paired = bool(cfg.data.source or cfg.data.source_channels)
    if cfg.data.source and cfg.data.source_channels:
        raise NeurodiffError("config field 'data.source_channels': give either data.source (a folder) or channel "
                             "roles in one file, not both")
    if paired and (cfg.data.sr_factor or cfg.data.context_slices):
        raise NeurodiffError("config field 'data.source': paired data cannot be combined with data.sr_factor or "
                             "data.context_slices")
    if cfg.train.objective == "regression" and not paired:
        raise NeurodiffError("config field 'train.objective': 'regression' needs paired data (data.source or "
                             "data.source_channels)")
    if cfg.data.context_slices and cfg.data.kind != "slices":
        raise NeurodiffError("config field 'data.context_slices': needs data.kind 'slices'")
    if cfg.data.kind == "slices" and cfg.model.dims != 2:
        raise NeurodiffError("config field 'model.dims': data.kind 'slices' trains a 2D model, set model.dims=2")
    if cfg.train.eval_every_nimg and not cfg.train.eval_features:
        raise NeurodiffError("config field 'train.eval_features': needed when train.eval_every_nimg > 0")
    if not 2 <= cfg.train.eval_samples <= 1000:
        raise NeurodiffError(f"config field 'train.eval_samples': expected 2..1000, got {cfg.train.eval_samples}")
    a = cfg.autoencoder
    if len(a.channel_mult) < 2 or any(c <= 0 for c in a.channel_mult):
        raise NeurodiffError(f"config field 'autoencoder.channel_mult': expected >= 2 positive integers (one "
                             f"downsampling per level after the first), got {a.channel_mult}")
    if a.perceptual_weight and not a.perceptual_features:
        raise NeurodiffError("config field 'autoencoder.perceptual_features': needed when perceptual_weight > 0 "
                             "(a local feature file; nothing is downloaded)")
    if cfg.data.codec and cfg.train.objective != "diffusion":
        raise NeurodiffError("config field 'data.codec': latent space is for diffusion models (train.objective)")
    if len(cfg.data.normalizer.percentiles) != 2:
        raise NeurodiffError("config field 'data.normalizer.percentiles': expected [low, high]")
    return cfg


def from_dict(raw: dict) -> RunConfig:
    return validate(_build(RunConfig, raw, ""))


def to_dict(cfg: RunConfig) -> dict:
    return asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=1e-4' -> (['train', 'lr'], 0.0001); values are parsed as YAML scalars/lists."""
    import yaml

    if "=" not in text:
        raise NeurodiffError(f"--set {text!r}: expected key=value, e.g. train.lr=1e-4")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str):  # YAML reads 1e-4 as a string; accept plain numbers too
        try:
            parsed = float(parsed) if any(c in parsed for c in ".eE") else int(parsed)
        except ValueError:
            pass
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise NeurodiffError(f"--set {text!r}: '{k}' is not a section")
        node[keys[-1]] = value
    return raw


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_raw(name_or_path: str | Path) -> dict:
    """A preset name or a YAML/JSON file -> plain dict (not yet validated)."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise NeurodiffError(f"unknown preset or config file '{name_or_path}' "
                                 f"(presets: {', '.join(list_presets())})")
    if not path.exists():
        raise NeurodiffError(f"{path}: no such config file")
    try:
        text = path.read_text()
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise NeurodiffError(f"{path}: cannot parse config ({str(e).splitlines()[0]})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise NeurodiffError(f"{path}: expected a mapping of config sections at the top level")
    return raw


def load(name_or_path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    return from_dict(apply_overrides(load_raw(name_or_path), list(overrides or [])))


def dump(cfg: RunConfig, path: str | Path) -> None:
    """Write the config as YAML, atomically."""
    import os

    import yaml

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, path)
