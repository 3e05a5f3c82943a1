"""CLI for latent diffusion: ``train-ae`` (the KL autoencoder), ``reconstruct`` (encode + decode files), and the
``--codec`` / ``--covariates`` options of ``train`` and ``sample``."""

from __future__ import annotations

import csv
from pathlib import Path

from neurodiff.errors import NeurodiffError


def add_parsers(sub) -> None:
    a = sub.add_parser("train-ae", help="train a KL autoencoder (latent diffusion's codec), 2D or 3D")
    a.add_argument("config", help="preset name (ae-3d, ae-2d) or a YAML/JSON file")
    a.add_argument("--data", help="folder or file with the training data (sets data.path)")
    a.add_argument("--out", required=True, help="run folder: config, checkpoints, previews, metrics.jsonl")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    a.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("reconstruct", help="encode and decode images or volumes with an autoencoder")
    r.add_argument("model", help="autoencoder run or exported model folder")
    r.add_argument("--input", required=True, help="a file or a folder of them")
    r.add_argument("--out", required=True, help="output folder (same names and formats)")
    r.add_argument("--slab", type=int, default=None, help="decode in slabs of this many latent voxels (memory)")
    r.add_argument("--no-progress", action="store_true")


def covariate_overrides(path: str) -> list[str]:
    """``--covariates table.csv`` for training: the table as data.manifest, its numeric columns as covariates."""
    p = Path(path)
    if not p.is_file():
        raise NeurodiffError(f"--covariates {path}: no such file (a CSV with a 'file' column and covariates)")
    with open(p, newline="") as f:
        header = next(csv.reader(f), [])
    if "file" not in header:
        raise NeurodiffError(f"--covariates {path}: expected a 'file' column, got {header}")
    names = [c for c in header if c not in ("file", "label")]
    if not names:
        raise NeurodiffError(f"--covariates {path}: no covariate columns besides 'file'")
    return [f"data.manifest={p.resolve()}", f"data.covariates=[{','.join(names)}]"]


def cmd_train_ae(args) -> int:
    from neurodiff import config as config_mod
    from neurodiff import dist
    from neurodiff.train.autoencoder import train_autoencoder

    out = Path(args.out)
    source = out / "config.yaml" if args.resume and (out / "config.yaml").is_file() else args.config
    cfg = config_mod.load(source, args.overrides)
    if args.data:
        cfg.data.path = args.data
    if not cfg.data.path:
        raise NeurodiffError("--data: no training data given (or set data.path in the config)")
    features = None
    if cfg.autoencoder.perceptual_weight:   # a local file the user gives; nothing is downloaded
        from neurodiff.metrics.features import load_features

        features = load_features(cfg.autoencoder.perceptual_features, dist.init()).fn
    summary = train_autoencoder(cfg, out, resume=args.resume, progress=not args.no_progress, features=features)
    dist.print0(f"trained the autoencoder to {summary['nimg']} images; run folder: {out}")
    dist.shutdown()
    return 0


def cmd_reconstruct(args) -> int:
    import torch
    from tqdm import tqdm

    from neurodiff.data import io
    from neurodiff.data.normalize import Normalizer
    from neurodiff.tasks.translate_cli import _inputs
    from neurodiff.tiling import pad_to_multiple
    from neurodiff.train.state import load_codec, load_model

    codec = load_codec(args.model, slab=args.slab)
    cfg = load_model(args.model).cfg
    nm = Normalizer(**cfg.data.meta["normalizer"])
    files = _inputs(args.input)
    for f in tqdm(files, desc="reconstructing", unit="file", disable=args.no_progress):
        x, meta = io.read(f)
        if x.ndim - 1 != codec.ae.dims or x.shape[0] != codec.ae.in_channels:
            raise NeurodiffError(f"{f}: expected {codec.ae.in_channels} channel(s) of {codec.ae.dims}D data, "
                                 f"got shape {list(x.shape)}")
        z, crop = pad_to_multiple(torch.from_numpy(nm.normalize(x)).float()[None], codec.factor)
        y = codec.decode(codec.encode(z))
        y = y[(slice(None), slice(None), *crop)] if crop else y
        io.write(Path(args.out) / f.name, nm.denormalize(y[0].clamp(-1, 1), meta.dtype), meta)
    print(f"wrote {len(files)} reconstructions to {args.out}")
    return 0
