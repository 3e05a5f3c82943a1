"""``neurodiff evaluate``: compare a real and a generated set; write metrics.json and a self-contained report.html.

Tasks: generation (distribution distances, diversity, intensities), paired (per-file SSIM / MS-SSIM / PSNR /
Pearson), conditioning (a predictor fitted on the real data checks the requested labels or covariates),
inpainting (paired metrics plus cell statistics). Sampled metrics are repeated over ``repeats`` seeds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neurodiff.data import io
from neurodiff.data.temps import write_text_atomic
from neurodiff.data.datasets import natural
from neurodiff.data.normalize import Normalizer
from neurodiff.errors import NeurodiffError

TASKS = ("generation", "paired", "conditioning", "inpainting")


class ImageSet:
    """Files of one folder: arrays [C, *S] (data units), names, labels/covariates from sub-folders or manifest.csv."""

    def __init__(self, root: str | Path, limit: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise NeurodiffError(f"{self.root}: no such folder")
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and io.is_image_file(p))
        if not files:
            raise NeurodiffError(f"{self.root}: no image files found")
        self.files = files[:limit] if limit else files
        self.names = [str(p.relative_to(self.root)) for p in self.files]
        self.arrays, self.meta = [], None
        for p in self.files:
            a, m = io.read(p)
            self.meta = self.meta or m
            self.arrays.append(a)
        self.label_names: list[str] | None = None     # per file: class name (sub-folder or manifest)
        self.covariates: dict[str, list[float]] = {}
        manifest = self.root / "manifest.csv"
        if manifest.is_file():
            self._read_manifest(manifest)
        if self.label_names is None and all(len(Path(n).parts) > 1 for n in self.names):
            self.label_names = [Path(n).parts[0] for n in self.names]

    def _read_manifest(self, manifest: Path) -> None:
        with open(manifest, newline="") as f:
            table = list(csv.DictReader(f))
        if not table or "file" not in table[0]:
            raise NeurodiffError(f"{manifest}: expected a CSV with a 'file' column")
        rows = {r["file"]: r for r in table}
        got = [rows.get(n) or {} for n in self.names]
        for col in ("label_name", "label"):
            if all((r.get(col) or "") != "" for r in got):
                self.label_names = [r[col] for r in got]
                break
        skip = {"file", "index", "seed", "label", "label_name", "covariates", "guidance", "sampler", "steps",
                "model_digest"}
        for col in (c for c in table[0] if c not in skip):   # one numeric column per covariate (training format)
            try:
                self.covariates[col] = [float(r[col]) for r in got]
            except (TypeError, ValueError, KeyError):
                continue
        for i, r in enumerate(got):                          # generated format: "name=value;name=value"
            for item in filter(None, (r.get("covariates") or "").split(";")):
                k, _, v = item.partition("=")
                try:
                    self.covariates.setdefault(k, [None] * len(got))[i] = float(v)
                except ValueError:
                    raise NeurodiffError(f"{manifest}: covariate {item!r} of {self.names[i]} is not a number") from None
        self.covariates = {k: v for k, v in self.covariates.items() if all(x is not None for x in v)}

    def tensor(self, normalizer: Normalizer, shape: list[int] | None = None) -> torch.Tensor:
        """All images normalised, resized to ``shape`` (spatial) when given -> [N, C, *S]."""
        out = []
        for name, a in zip(self.names, self.arrays):
            x = torch.from_numpy(np.ascontiguousarray(normalizer.normalize(a)))
            if shape and list(x.shape[1:]) != list(shape):
                mode = "bilinear" if x.ndim == 3 else "trilinear"
                x = F.interpolate(x[None], size=list(shape), mode=mode, align_corners=False,
                                  antialias=x.ndim == 3)[0]
            out.append(x)
        try:
            return torch.stack(out)
        except RuntimeError:
            raise NeurodiffError(f"{self.root}: images differ in size or channels; evaluation needs one shape") from None


def _key(name: str):
    """Class names compare as numbers when they are numbers ('03' == '3'), else as text."""
    return int(name) if str(name).lstrip("-").isdigit() else str(name)


def _classes(real: ImageSet, fake: ImageSet) -> list | None:
    """The real set's classes (natural order); a generated label outside them is an error."""
    if real.label_names is None:
        return None
    classes = sorted({_key(v) for v in real.label_names}, key=lambda k: natural(str(k)))
    for n, v in zip(fake.names, fake.label_names or []):
        if _key(v) not in classes:
            raise NeurodiffError(f"{fake.root}/{n}: label {v!r} is not a class of {real.root} ({classes[:20]})")
    return classes


def _fit_normalizer(s: ImageSet) -> Normalizer:
    return minmax_normalizer(s.arrays, s.root)


def minmax_normalizer(arrays, where) -> Normalizer:
    """Min-max over a set of arrays (any iterable, read once) to [-1, 1]; ``where`` names the set in errors."""
    lo, hi = np.inf, -np.inf
    for a in arrays:
        lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    if not hi > lo:
        raise NeurodiffError(f"{where}: all images are constant")
    return Normalizer("minmax", lo, hi)


def _mean_sd(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": v.tolist()}


def ridge_fit_predict(f_train, y_train, f_test, classes: bool, lam: float = 1e-2):
    """Ridge regression on standardised features (one-hot targets for classes) -> predictions for f_test."""
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    a, b = (f_train - mu) / sd, (f_test - mu) / sd
    a, b = np.hstack([a, np.ones((len(a), 1))]), np.hstack([b, np.ones((len(b), 1))])
    y = np.eye(int(y_train.max()) + 1)[y_train] if classes else y_train[:, None]
    w = np.linalg.solve(a.T @ a + lam * len(a) * np.eye(a.shape[1]), a.T @ y)
    p = b @ w
    return p.argmax(1) if classes else p[:, 0]


def evaluate(real_dir, fake_dir, out_dir, task: str = "generation", features_path: str | None = None,
             repeats: int = 3, limit: int | None = None, mask_dir: str | None = None, cells: bool = False,
             data_range: float | None = None, uncertainty_dir: str | None = None) -> dict:
    """Compute the task's metrics, write ``out_dir/metrics.json`` and ``out_dir/report.html``; return the metrics."""
    from neurodiff.metrics import distances, image

    if task not in TASKS:
        raise NeurodiffError(f"--task {task!r}: expected one of {list(TASKS)}")
    if repeats < 1:
        raise NeurodiffError(f"--repeats: expected >= 1, got {repeats}")
    real, fake = ImageSet(real_dir, limit), ImageSet(fake_dir, limit)
    feats = None
    if features_path:
        from neurodiff.metrics.features import load_features
        feats = load_features(features_path)
    normalizer = (feats.normalizer if feats is not None and feats.normalizer else None) or _fit_normalizer(real)
    shape = list(fake.arrays[0].shape[1:])
    for s_ in (real, fake):
        dims = {a.ndim - 1 for a in s_.arrays}
        if dims != {len(shape)}:
            raise NeurodiffError(f"{s_.root}: holds {sorted(dims)}D images; {fake.root} is {len(shape)}D "
                                 "(evaluate compares sets of one kind)")
    xr, xf = real.tensor(normalizer, shape), fake.tensor(normalizer, shape)
    if feats is not None and feats.in_channels and feats.in_channels != xf.shape[1]:
        raise NeurodiffError(f"{feats.source}: the feature network takes {feats.in_channels} channel(s), the images "
                             f"have {xf.shape[1]}")
    if xr.shape[1] != xf.shape[1]:
        raise NeurodiffError(f"channels differ: {xr.shape[1]} in {real.root}, {xf.shape[1]} in {fake.root}")
    if data_range is not None and data_range <= 0:
        raise NeurodiffError(f"--data-range: expected a positive number, got {data_range}")
    data_range = data_range or normalizer.hi - normalizer.lo
    classes = _classes(real, fake)
    real.labels = [classes.index(_key(v)) for v in real.label_names] if classes else None
    fake.labels = [classes.index(_key(v)) for v in fake.label_names] if classes and fake.label_names else None
    m: dict = {"task": task, "real": str(real.root), "fake": str(fake.root), "n_real": len(xr), "n_fake": len(xf),
               "shape": [xf.shape[1], *shape], "normalizer": normalizer.to_dict(), "data_range": data_range,
               "repeats": repeats, "features": feats.source if feats else None}
    seeds = range(repeats)
    if task in ("generation", "conditioning"):
        m["intensity_wasserstein"] = float(_w1(xr, xf) * data_range / 2)
        m["swd_patches"] = _mean_sd([distances.sliced_wasserstein(xr, xf, patch=min(7, *shape), seed=s,
                                                                  n_patches=5000) for s in seeds])
        pairs = min(100, len(xf) * (len(xf) - 1) // 2)
        if pairs >= 1 and len(xr) > 1:
            m["ms_ssim_diversity_fake"] = _mean_sd([image.pairwise_ms_ssim(xf, pairs, 2.0, s)[0] for s in seeds])
            m["ms_ssim_diversity_real"] = _mean_sd([image.pairwise_ms_ssim(xr, pairs, 2.0, s)[0] for s in seeds])
        if feats is None:
            print("note: FD, KID and precision/recall need --features (see `neurodiff train-features`); skipped",
                  flush=True)
        else:
            fr, ff = feats(xr).numpy(), feats(xf).numpy()
            m["fd"] = distances.frechet_distance(fr, ff)
            m["kid"] = _mean_sd([distances.kid(fr, ff, subsets=50, subset_size=min(1000, len(fr), len(ff)),
                                               seed=s)[0] for s in seeds])
            # precision / recall depend on set sizes: equal-size random subsets per repeat
            size = min(len(fr), len(ff))
            pr = []
            for s in seeds:
                rng = np.random.default_rng(s)
                pr.append(distances.precision_recall(fr[rng.choice(len(fr), size, replace=False)],
                                                     ff[rng.choice(len(ff), size, replace=False)], k=3))
            m["precision"], m["recall"] = _mean_sd([p for p, _ in pr]), _mean_sd([r for _, r in pr])
            if min(len(fr), len(ff)) <= fr.shape[1]:
                m["warning"] = (f"fewer samples ({min(len(fr), len(ff))}) than feature dimensions ({fr.shape[1]}): "
                                "FD is biased upwards; compare FD only between runs with equal sample counts")
        if fake.labels is not None:
            m["per_condition"] = _per_condition(xr, real.labels, xf, fake.labels, seeds)
            for row in m["per_condition"]:
                row["label"] = classes[row["label"]]
    if task == "conditioning":
        m["conditioning"] = _conditioning(real, fake, xr, xf, feats)
    if task in ("paired", "inpainting"):
        # metrics run in normalised units, where the data range L in data units spans 2 L / (hi - lo)
        m["paired"] = _paired(real, fake, xr, xf, mask_dir, 2.0 * data_range / (normalizer.hi - normalizer.lo))
    if uncertainty_dir:
        if task != "paired":
            raise NeurodiffError("--uncertainty: only with --task paired (maps of a translation's spread)")
        from neurodiff.metrics.uncertainty import calibration
        m["uncertainty"] = calibration(real, fake, uncertainty_dir, mask_dir)
    if cells:
        from neurodiff.metrics.cells import cell_stats, compare_cells, segment_nuclei
        stats = lambda arrs: [cell_stats(segment_nuclei(a, dims=a.ndim - 1)) for a in arrs]  # noqa: E731
        if task in ("paired", "inpainting"):  # per-image errors only for files paired by name
            index = {n: i for i, n in enumerate(real.names)}
            m["cells"] = _jsonable(compare_cells(stats([real.arrays[index[n]] for n in fake.names]),
                                                 stats(fake.arrays)))
        else:
            c = compare_cells(stats(real.arrays), stats(fake.arrays))
            m["cells"] = _jsonable({k: v for k, v in c.items() if "rel_err" not in k or k.startswith("set_")})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "metrics.json", json.dumps(_jsonable(m), indent=2))
    from neurodiff.metrics.report import render
    write_text_atomic(out_dir / "report.html", render(m, xr, xf))
    return m


def _w1(xr: torch.Tensor, xf: torch.Tensor, n: int = 200_000) -> float:
    from scipy.stats import wasserstein_distance
    rng = np.random.default_rng(0)
    a, b = xr.reshape(-1).numpy(), xf.reshape(-1).numpy()
    return wasserstein_distance(a[rng.integers(0, a.size, n)], b[rng.integers(0, b.size, n)])


def _per_condition(xr, lr, xf, lf, seeds) -> list[dict]:
    from neurodiff.metrics import distances
    rows = []
    for c in sorted(set(lf), key=lambda v: (str(type(v)), v)):
        f = xf[[i for i, v in enumerate(lf) if v == c]]
        r = xr[[i for i, v in enumerate(lr) if v == c]] if lr is not None else xr[:0]
        row = {"label": c, "n_fake": len(f), "n_real": len(r), "mean_fake": float(f.mean())}
        if len(r):
            row["mean_real"] = float(r.mean())
            row["swd_patches"] = float(np.mean([distances.sliced_wasserstein(r, f, patch=min(7, *f.shape[2:]),
                                                                            n_patches=2000, seed=s) for s in seeds]))
        rows.append(row)
    return rows


def _conditioning(real: ImageSet, fake: ImageSet, xr, xf, feats) -> dict:
    """Fit on real features (hold out 20 % to show the predictor's own quality), predict the generated set."""
    if feats is None:
        raise NeurodiffError("--task conditioning needs --features (train one with `neurodiff train-features`)")
    fr, ff = feats(xr).numpy().astype(np.float64), feats(xf).numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(fr))
    cut = max(1, int(0.8 * len(fr)))
    tr, te = perm[:cut], perm[cut:]
    out: dict = {}
    if real.labels is not None and fake.labels is not None:
        yr = np.asarray(real.labels)
        yf = np.asarray(fake.labels)
        if yf.dtype.kind not in "iu" or yr.dtype.kind not in "iu":
            raise NeurodiffError("conditioning: labels must be class indices in both sets")
        held = ridge_fit_predict(fr[tr], yr[tr], fr[te], True) if len(te) else np.array([])
        pred = ridge_fit_predict(fr, yr, ff, True)
        out["label"] = {"accuracy_generated": float((pred == yf).mean()),
                        "within_one_generated": float((np.abs(pred - yf) <= 1).mean()),
                        "accuracy_real_heldout": float((held == yr[te]).mean()) if len(te) else None,
                        "n_classes": int(yr.max()) + 1}
    for name, yf in fake.covariates.items():
        if name not in real.covariates:
            continue
        yr = np.asarray(real.covariates[name])
        if np.ptp(yf) == 0:
            raise NeurodiffError(f"{fake.root}: covariate '{name}' has one value in every sample; the conditioning "
                                 "check needs generated samples over a range of requested values")
        pred = ridge_fit_predict(fr, yr, ff, False)
        held = ridge_fit_predict(fr[tr], yr[tr], fr[te], False)
        out[name] = {"pearson_generated": float(np.corrcoef(pred, yf)[0, 1]),
                     "mae_generated": float(np.abs(pred - yf).mean()),
                     "pearson_real_heldout": float(np.corrcoef(held, yr[te])[0, 1]) if len(te) > 2 else None}
    if not out:
        raise NeurodiffError(f"conditioning: no labels or covariates shared by {real.root} (sub-folders or "
                             f"manifest.csv) and {fake.root} (manifest.csv)")
    return out


def _paired(real: ImageSet, fake: ImageSet, xr, xf, mask_dir, rng: float = 2.0) -> dict:
    from neurodiff.metrics import image
    index = {n: i for i, n in enumerate(real.names)}
    missing = [n for n in fake.names if n not in index]
    if missing:
        raise NeurodiffError(f"{fake.root}/{missing[0]}: no file of that name in {real.root} (paired by file name)")
    r = xr[[index[n] for n in fake.names]]
    mask = None
    if mask_dir:
        mset = ImageSet(mask_dir)
        mi = {n: a for n, a in zip(mset.names, mset.arrays)}
        mask = torch.stack([torch.from_numpy(mi[n] != 0) for n in fake.names]) if all(n in mi for n in fake.names) \
            else None
        if mask is None:
            raise NeurodiffError(f"{mask_dir}: needs a mask with the same file name for every generated file")
    rows = {"psnr": image.psnr(xf, r, rng, mask), "ssim": image.ssim(xf, r, rng, mask),
            "pearson": image.pearson(xf, r, mask)}
    try:
        rows["ms_ssim"] = image.ms_ssim(xf, r, rng)
    except NeurodiffError:
        pass
    return {"mean": {k: float(v.mean()) for k, v in rows.items()},
            "per_file": [{"file": n, **{k: float(v[i]) for k, v in rows.items()}} for i, n in enumerate(fake.names)]}


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return o.tolist() if o.size <= 64 else {"n": int(o.size), "mean": float(o.mean())}
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return None   # JSON has no inf / NaN (e.g. PSNR of identical images)
    return o


def train_features_on_folder(data_dir, out, size: int = 64, steps: int = 1000, batch: int = 64,
                             use_labels: bool = True, seed: int = 0, progress: bool = True) -> dict:
    """``neurodiff train-features``: a FeatureNet on the real images (3D: slices of all three axes, 2.5D)."""
    from neurodiff.metrics.features import train_features

    s = ImageSet(data_dir)
    normalizer = _fit_normalizer(s)
    classes = sorted({_key(v) for v in s.label_names}, key=lambda k: natural(str(k))) if s.label_names else None
    s.labels = [classes.index(_key(v)) for v in s.label_names] if classes else None
    xs, labels = [], []
    for i, a in enumerate(s.arrays):
        x = torch.from_numpy(np.ascontiguousarray(normalizer.normalize(a)))
        views = [x] if x.ndim == 3 else [x[:, k] for k in range(x.shape[1])] + \
            [x[:, :, k] for k in range(x.shape[2])] + [x[:, :, :, k] for k in range(x.shape[3])]
        for v in views:
            xs.append(F.interpolate(v[None], size=(size, size), mode="bilinear", align_corners=False,
                                    antialias=True)[0])
            labels.append(s.labels[i] if s.labels is not None else 0)
    if len({t.shape[0] for t in xs}) > 1:
        raise NeurodiffError(f"{s.root}: images differ in channels")
    y = torch.tensor(labels) if use_labels and s.labels is not None and all(isinstance(v, int) for v in labels) \
        else None
    meta = train_features(torch.stack(xs), y, normalizer, out, steps=steps, batch=batch, seed=seed,
                          progress=progress)
    meta["source"] = str(s.root)
    return meta


def training_evaluator(features_path: str, n_samples: int = 256, steps: int = 10):
    """A cheap KID / FD check for the training loop: EMA samples (dpmpp_2m, few steps) vs training samples."""
    from neurodiff.metrics import distances
    from neurodiff.metrics.features import load_features
    from neurodiff.tasks.generate import sample_batch

    feats = load_features(features_path)
    cache: dict = {}

    def to_feature_units(x, cfg):  # training normalisation -> the feature network's normalisation
        if feats.normalizer is None:
            return x
        data_norm = Normalizer(**cfg.data.meta["normalizer"])
        units = torch.from_numpy(data_norm.denormalize(x, "float32"))
        return feats.normalizer.normalize(units)

    def run(net, cfg, dataset, device) -> dict:
        n = min(n_samples, 1000, len(dataset))
        if "real" not in cache:
            g = torch.Generator().manual_seed(0)
            idx = torch.randperm(len(dataset), generator=g)[:n].tolist()
            real = torch.stack([dataset[(i, 0)]["x"] for i in idx])
            cache["real"] = feats(to_feature_units(real, cfg)).numpy()
            cache["labels"] = [int(dataset[(i, 0)]["label"]) for i in idx] if cfg.model.num_classes else None
        fake = torch.cat([sample_batch(net, cfg, list(range(i, min(i + 64, n))),
                                       cache["labels"][i:i + 64] if cache["labels"] else None, None, 1.0, steps,
                                       "dpmpp_2m", exact=False, device=device).cpu() for i in range(0, n, 64)])
        ff = feats(to_feature_units(fake.cpu(), cfg)).numpy()
        k, k_sd = distances.kid(cache["real"], ff, subsets=20, subset_size=min(n, 500))
        return {"fd": distances.frechet_distance(cache["real"], ff), "kid": k, "kid_sd": k_sd, "n": n,
                "steps": steps}

    return run
