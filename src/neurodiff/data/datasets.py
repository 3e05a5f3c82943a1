"""Datasets returning ``{x, label?, scalars?}``: folders of images, whole volumes or 3D crops, 2D slices of volumes.

Items are fetched as ``dataset[(index, seed)]`` so random crops and flips are a function of the seed: training
is reproducible and resumable without saving RNG state.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neurodiff.data import io
from neurodiff.data.normalize import Normalizer, fit_normalizer
from neurodiff.errors import NeurodiffError
from neurodiff.tasks.superres import lowres_input
from neurodiff.tasks.volume import context_image


@dataclass
class Entry:
    file: Path
    label: int | None = None
    scalars: tuple | None = None


def list_files(root: Path) -> list[Path]:
    if not root.exists():
        raise NeurodiffError(f"{root}: no such file or folder (data.path)")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and io.is_image_file(p))
    if not files:
        raise NeurodiffError(f"{root}: no image files found (expected .png, .jpg, .tif, .nii, .nii.gz, .npy, .npz)")
    return files


def _match_sources(cfg, entries: list[Entry]) -> list[Path]:
    """The source file of every target, matched by name without suffix (a.png <-> a.tif; a.nii.gz <-> a.nii)."""
    root = Path(cfg.source) if Path(cfg.source).is_absolute() else Path(cfg.path) / cfg.source
    files = list_files(root)
    by_name: dict[str, Path] = {}
    for f in files:
        key = io.stem(f.name)
        if key in by_name:
            raise NeurodiffError(f"{root}: two source files named {key!r} ({by_name[key].name}, {f.name})")
        by_name[key] = f
    missing = [e.file for e in entries if io.stem(e.file.name) not in by_name]
    if missing:
        raise NeurodiffError(f"{missing[0]}: no source file of that name in {root} (data.source; "
                             f"{len(missing)} of {len(entries)} targets unmatched)")
    return [by_name[io.stem(e.file.name)] for e in entries]


def _channel_roles(cfg, file: Path, channels: int, names: list | None) -> tuple[list[int], list[int]]:
    """data.source_channels (indices or channel names) -> (source indices, target indices) of one file."""
    if not cfg.source_channels:
        return [], []
    idx = []
    for c in cfg.source_channels:
        if isinstance(c, str):
            if not names or c not in names:
                raise NeurodiffError(f"{file}: no channel named {c!r} (data.source_channels; channels: "
                                     f"{names or 'unnamed'})")
            c = list(names).index(c)
        if not 0 <= c < channels:
            raise NeurodiffError(f"{file}: data.source_channels {cfg.source_channels}: channel {c} outside "
                                 f"0..{channels - 1}")
        idx.append(c)
    rest = [c for c in range(channels) if c not in idx]
    if not rest:
        raise NeurodiffError(f"{file}: data.source_channels {cfg.source_channels} leaves no target channel")
    return idx, rest


def natural(name: str):
    """Sort key: numbers by value (2 before 10), then text."""
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def _manifest(cfg, root: Path) -> tuple[list[Entry], list[str]]:
    path = Path(cfg.manifest) if Path(cfg.manifest).is_absolute() else root / cfg.manifest
    if not cfg.manifest or not path.is_file():
        raise NeurodiffError(f"{path}: manifest not found (data.manifest, needed by data.labels='manifest' "
                             "or data.covariates)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "file" not in rows[0]:
        raise NeurodiffError(f"{path}: expected a CSV with a header row containing 'file'")
    for col in cfg.covariates + (["label"] if cfg.labels == "manifest" else []):
        if col not in rows[0]:
            raise NeurodiffError(f"{path}: no column '{col}' (columns: {', '.join(rows[0])})")
    names: list[str] = []
    if cfg.labels == "manifest":
        names = sorted({r["label"] for r in rows}, key=natural)
    elif cfg.labels == "folders":
        names = sorted({Path(r["file"]).parts[0] for r in rows if len(Path(r["file"]).parts) > 1}, key=natural)
    entries = []
    for i, r in enumerate(rows, start=2):
        file = root / r["file"]
        if not file.is_file():
            raise NeurodiffError(f"{path}, line {i}: file '{r['file']}' not found")
        scalars = None
        if cfg.covariates:
            try:
                scalars = tuple(float(r[c]) for c in cfg.covariates)
            except ValueError:
                raise NeurodiffError(f"{path}, line {i}: covariates {cfg.covariates} must be numbers") from None
            if not np.isfinite(scalars).all():
                raise NeurodiffError(f"{path}, line {i}: covariate is NaN or infinite")
        label = None
        if cfg.labels == "manifest":
            label = names.index(r["label"])
        elif cfg.labels == "folders":
            if len(Path(r["file"]).parts) < 2:
                raise NeurodiffError(f"{path}, line {i}: data.labels='folders' but '{r['file']}' is not in a class folder")
            label = names.index(Path(r["file"]).parts[0])
        entries.append(Entry(file, label, scalars))
    return entries, names


def discover(cfg) -> tuple[list[Entry], list[str]]:
    """Files with their labels and covariates, and the class names (sorted folder names or manifest labels)."""
    root = Path(cfg.path)
    if cfg.labels == "manifest" or cfg.covariates:
        return _manifest(cfg, root)
    files = list_files(root)
    if cfg.labels == "folders":
        if root.is_file():
            raise NeurodiffError(f"{root}: data.labels='folders' needs a folder with one sub-folder per class")
        names = sorted({f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1},
                       key=natural)
        if not names:
            raise NeurodiffError(f"{root}: data.labels='folders' but no class sub-folders found")
        entries = [Entry(f, names.index(f.relative_to(root).parts[0])) for f in files
                   if len(f.relative_to(root).parts) > 1]
        return entries, names
    return [Entry(f) for f in files], []


def _resize(x: torch.Tensor, size: list[int], mode: str) -> torch.Tensor:
    """[C, *S] -> [C, *size]; 'fit' keeps the aspect ratio and pads with the minimum (background)."""
    if list(x.shape[1:]) == list(size):
        return x
    interp = "bilinear" if x.ndim == 3 else "trilinear"
    if mode == "fit":
        scale = min(t / s for t, s in zip(size, x.shape[1:]))
        inner = [max(1, round(s * scale)) for s in x.shape[1:]]
        y = F.interpolate(x[None], size=inner, mode=interp, align_corners=False, antialias=x.ndim == 3)[0]
        pads = []
        for t, s in reversed(list(zip(size, inner))):
            pads += [(t - s) // 2, t - s - (t - s) // 2]
        return F.pad(y, pads, value=-1.0)
    return F.interpolate(x[None], size=list(size), mode=interp, align_corners=False, antialias=x.ndim == 3)[0]


class ImageDataset(torch.utils.data.Dataset):
    """One dataset class for the three kinds: 'images' (2D files), 'volumes' (3D files), 'slices' (2D of 3D)."""

    def __init__(self, cfg, normalizer: Normalizer | None = None, cache_bytes: int = 4 << 30):
        self.cfg = cfg
        root = Path(cfg.path)
        self.entries, self.class_names = discover(replace(cfg, path=str(root / cfg.target)) if cfg.target else cfg)
        if not self.entries:
            raise NeurodiffError(f"{cfg.path}: no training files")
        if cfg.depth_bins and cfg.labels != "none":
            raise NeurodiffError("data.depth_bins: a depth label and data.labels cannot both be used (one label)")
        self._cache: dict[Path, np.ndarray] = {}
        self._cache_bytes, self.cache_limit = 0, cache_bytes
        first, meta = self._read(self.entries[0].file)
        self.channels = first.shape[0]
        self.sources = _match_sources(cfg, self.entries) if cfg.source else None
        self.src_idx, self.tgt_idx = _channel_roles(cfg, self.entries[0].file, first.shape[0], meta.channel_names)
        want_ndim = 2 if cfg.kind == "images" else 3
        self.items: list[tuple[int, int]] = []   # (entry, slice index or -1)
        self.boxes: dict[int, tuple] = {}
        for i, e in enumerate(self.entries):
            a, a_meta = (first, meta) if i == 0 else self._read(e.file)
            if a.ndim - 1 != want_ndim:
                raise NeurodiffError(f"{e.file}: data.kind='{cfg.kind}' expects {want_ndim}D files, "
                                     f"got shape {list(a.shape)}")
            if a.shape[0] != self.channels or (cfg.channels and a.shape[0] != cfg.channels):
                raise NeurodiffError(f"{e.file}: expected {cfg.channels or self.channels} channels, got {a.shape[0]}")
            if not np.isfinite(a).all():
                raise NeurodiffError(f"{e.file}: contains NaN or infinite values")
            if self.sources:
                self._check_pair(e.file, a, a_meta, self.sources[i])
            box = self._foreground_box(a) if cfg.crop_foreground else tuple(slice(None) for _ in a.shape[1:])
            shape = [b.stop - (b.start or 0) if b.stop is not None else n for b, n in zip(box, a.shape[1:])]
            if cfg.kind == "slices":
                shape = [n for j, n in enumerate(shape) if j != cfg.axis]
            if i == 0:
                first_shape = shape
            elif shape != first_shape and not cfg.size:
                raise NeurodiffError(f"{e.file}: size {shape} differs from {first_shape} of {self.entries[0].file}; "
                                     "set data.size to resize every sample")
            self.boxes[i] = box
            if cfg.kind == "slices":
                if not 0 <= cfg.axis < 3:
                    raise NeurodiffError(f"data.axis: expected 0, 1 or 2 for 3D files, got {cfg.axis}")
                vol = a[(slice(None), *box)]
                n = vol.shape[1 + cfg.axis]
                for k in range(n):
                    sl = np.take(vol, k, axis=1 + cfg.axis)
                    if cfg.min_foreground and (sl > vol.min()).mean() < cfg.min_foreground:
                        continue
                    self.items.append((i, k))
            else:
                self.items.append((i, -1))
        if not self.items:
            raise NeurodiffError(f"{cfg.path}: no slices pass data.min_foreground={cfg.min_foreground}")
        src0 = self._pair(0)[1]
        self.num_source_channels = 0 if src0 is None else src0.shape[0]
        self.channels = len(self.tgt_idx) if self.tgt_idx else self.channels
        self.normalizer = normalizer or fit_normalizer(
            cfg.normalizer, (self._pair(i)[0] for i in range(len(self.entries))), meta.dtype)
        self.source_normalizer = None
        if self.num_source_channels:   # the source has units of its own (e.g. T1 intensities vs a probability map)
            self.source_normalizer = fit_normalizer(
                cfg.normalizer, (self._pair(i)[1] for i in range(len(self.entries))), src0.dtype.name)
        self.covariate_stats = covariate_stats(cfg.covariates, [e.scalars for e in self.entries])
        self.meta = self._output_meta(meta, first)
        if self.source_normalizer is not None:
            self.meta.update(source_normalizer=self.source_normalizer.to_dict(),
                             source_channels=self.num_source_channels, shape=[self.channels, *self.meta["shape"][1:]])

    def _pair(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(target, source or None) arrays of entry i, whole files in data units."""
        a = self._read(self.entries[i].file)[0]
        if self.src_idx:
            return a[self.tgt_idx], a[self.src_idx]
        return a, (self._read(self.sources[i])[0] if self.sources else None)

    def _check_pair(self, file: Path, a: np.ndarray, tmeta, src_file: Path) -> None:
        s, smeta = self._read(src_file)
        if s.shape[1:] != a.shape[1:]:
            raise NeurodiffError(f"{src_file}: source of shape {list(s.shape[1:])} does not match its target {file} "
                                 f"of shape {list(a.shape[1:])}")
        if not np.isfinite(s).all():
            raise NeurodiffError(f"{src_file}: contains NaN or infinite values")
        if smeta is not None and tmeta is not None and smeta.spacing and tmeta.spacing and not np.allclose(
                smeta.spacing, tmeta.spacing, rtol=1e-3):
            raise NeurodiffError(f"{src_file}: voxel spacing {list(smeta.spacing)} differs from its target {file} "
                                 f"({list(tmeta.spacing)}); resample one onto the other first")

    # -- file access -------------------------------------------------------------------------------------------
    def _read(self, file: Path):
        if file in self._cache:
            return self._cache[file], None
        a, meta = io.read(file)
        if self._cache_bytes + a.nbytes <= self.cache_limit:
            self._cache[file] = a
            self._cache_bytes += a.nbytes
        return a, meta

    @staticmethod
    def _foreground_box(a: np.ndarray) -> tuple:
        fg = (a > a.min()).any(axis=0)
        if not fg.any():
            return tuple(slice(None) for _ in fg.shape)
        idx = np.nonzero(fg)
        return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)

    def _output_meta(self, meta: io.ImageMeta, first: np.ndarray) -> dict:
        """Spacing and affine of a generated sample: the foreground box's origin, the resized voxel size."""
        x0 = self[(0, 0)]["x"]
        cfg, full = self.cfg, first.shape[1:]
        starts = [b.start or 0 for b in self.boxes[0]]
        native = [(b.stop if b.stop is not None else n) - s for b, n, s in zip(self.boxes[0], full, starts)]
        axes = [j for j in range(len(full)) if not (cfg.kind == "slices" and j == cfg.axis)]
        scale, shift = [1.0] * len(full), [float(s) for s in starts]
        if cfg.size:  # output voxel i sits at input index (i - pad + 0.5) * f - 0.5 (align_corners=False)
            fit = cfg.resize_mode == "fit"
            k = min(t / native[j] for t, j in zip(cfg.size, axes)) if fit else None
            for t, j in zip(cfg.size, axes):
                inner = max(1, round(native[j] * k)) if fit else t
                f = native[j] / inner
                scale[j] = f
                shift[j] += (0.5 - (t - inner) // 2) * f - 0.5
        spacing = [meta.spacing[j] * scale[j] for j in axes] if meta.spacing else None
        affine = None
        if meta.affine is not None:
            A = np.asarray(meta.affine, dtype=float)
            A[:3, 3] += A[:3, :len(full)] @ np.asarray(shift)
            A[:3, :len(full)] *= np.asarray(scale)
            order = axes + [j for j in range(len(full)) if j not in axes]   # slices: in-plane axes first
            affine = A[:, order + [3]].tolist()
        extra = {}
        if cfg.kind == "slices":   # what slice-by-slice volume generation needs to write stacks
            extra = {"num_slices": native[cfg.axis],
                     "slice_spacing": float(meta.spacing[cfg.axis]) if meta.spacing else None}
        return {**extra, "format": meta.format, "dtype": meta.dtype, "spacing": spacing, "unit": meta.unit,
                "affine": affine, "class_names": self.class_names, "shape": list(x0.shape),
                "covariates": list(self.cfg.covariates), "covariate_stats": self.covariate_stats,
                "normalizer": self.normalizer.to_dict(),
                "num_files": len(self.entries), "num_items": len(self.items)}

    # -- items -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, 0)
        cfg = self.cfg
        entry_i, k = self.items[index]
        entry = self.entries[entry_i]
        a, src = self._pair(entry_i)
        box = (slice(None), *self.boxes[entry_i])
        a, src = a[box], (None if src is None else src[box])
        out: dict = {}
        context = []
        if k >= 0:
            n = a.shape[1 + cfg.axis]
            # preceding slices k-1, k-2, ... (None before the first), resized and flipped with slice k below
            context = [np.take(a, k - j, axis=1 + cfg.axis) if k - j >= 0 else None
                       for j in range(1, cfg.context_slices + 1)]
            a = np.take(a, k, axis=1 + cfg.axis)
            src = None if src is None else np.take(src, k, axis=1 + cfg.axis)
            pos = k / max(n - 1, 1)
            if cfg.depth_bins:
                out["label"] = torch.tensor(min(int(k * cfg.depth_bins / n), cfg.depth_bins - 1))
            if cfg.depth_scalar:
                out["scalars"] = torch.tensor([pos], dtype=torch.float32)
        x = torch.from_numpy(np.ascontiguousarray(self.normalizer.normalize(a)))
        c = x.shape[0]
        if src is not None:   # transformed with the target, split off below
            x = torch.cat([x, torch.from_numpy(np.ascontiguousarray(self.source_normalizer.normalize(src)))])
        if context:
            x = torch.cat([x] + [torch.full_like(x, -1.0) if s is None else
                                 torch.from_numpy(np.ascontiguousarray(self.normalizer.normalize(s))) for s in context])
        if cfg.size:
            x = _resize(x, cfg.size, cfg.resize_mode)
        g = torch.Generator().manual_seed(int(seed))
        if cfg.crop:
            if any(c > s for c, s in zip(cfg.crop, x.shape[1:])) or len(cfg.crop) != x.ndim - 1:
                raise NeurodiffError(f"data.crop {cfg.crop}: larger than or not matching the sample size "
                                     f"{list(x.shape[1:])} of {entry.file}")
            starts = [int(torch.randint(0, s - c + 1, (1,), generator=g)) for c, s in zip(cfg.crop, x.shape[1:])]
            x = x[(slice(None), *(slice(s, s + c) for s, c in zip(starts, cfg.crop)))]
        if cfg.hflip and torch.rand(1, generator=g) < 0.5:
            x = x.flip(-1)
        if cfg.vflip and torch.rand(1, generator=g) < 0.5:
            x = x.flip(-2)
        if cfg.rot90:  # quarter turns only where the plane is square, so batch shapes stay equal
            k = int(torch.randint(0, 4, (1,), generator=g))
            x = torch.rot90(x, k if x.shape[-1] == x.shape[-2] else 2 * (k % 2), dims=(-2, -1))
        if cfg.sr_factor:
            out["cond_image"], level = lowres_input(x, cfg.sr_factor, cfg.sr_noise_aug, g)
            if cfg.sr_noise_aug:
                lvl = torch.tensor([level], dtype=torch.float32)   # first, before depth and covariates
                out["scalars"] = torch.cat([lvl, out["scalars"]]) if "scalars" in out else lvl
        if src is not None:
            out["cond_image"] = x[c:]
            x = x[:c]
        if context:
            present = [s is not None for s in context]
            if torch.rand(1, generator=g) < cfg.context_drop_prob:   # learn to start a stack from nothing
                present = [False] * len(context)
            out["cond_image"] = context_image(x[c:], present)
            x = x[:c]
        out["x"] = x.contiguous()
        if entry.label is not None:
            out["label"] = torch.tensor(entry.label)
        if entry.scalars is not None:   # standardised by the training set's mean and spread (stored with the model)
            st = [self.covariate_stats[c] for c in cfg.covariates]
            s = torch.tensor([(v - q["mean"]) / q["std"] for v, q in zip(entry.scalars, st)], dtype=torch.float32)
            out["scalars"] = torch.cat([out["scalars"], s]) if "scalars" in out else s
        return out


def covariate_stats(names: list[str], rows: list) -> dict:
    """{name: {mean, std, min, max}} of the training covariates (std 1 for a constant one)."""
    if not names:
        return {}
    a = np.asarray(rows, dtype=np.float64)
    return {c: {"mean": float(a[:, j].mean()), "std": float(a[:, j].std()) or 1.0,
                "min": float(a[:, j].min()), "max": float(a[:, j].max())} for j, c in enumerate(names)}


def context_channels(cfg, channels: int) -> int:
    """Channels concatenated to the net's input: context slices + presence maps, or the low-res image."""
    if cfg.sr_factor:
        return channels
    return cfg.context_slices * (channels + 1) if cfg.kind == "slices" else 0


def num_scalars(cfg) -> int:
    sr = 1 if cfg.sr_factor and cfg.sr_noise_aug else 0   # the noise-augmentation level, first
    return sr + len(cfg.covariates) + (1 if cfg.kind == "slices" and cfg.depth_scalar else 0)


def num_classes(cfg, dataset: ImageDataset) -> int:
    return cfg.depth_bins if cfg.depth_bins else len(dataset.class_names)
