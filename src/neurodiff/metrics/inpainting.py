"""`evaluate --task inpainting --model`: random artefact masks on intact images, RePaint, then cell statistics.

For every intact image and every mask-size bin (5-15 %, 15-30 %, 30-50 % of the image) a seeded random mask of
tears (thick line segments) and missing blocks (rectangles) is drawn, the masked pixels are repainted, and the
repaired image is compared with the intact one: nuclei are segmented in both (metrics/cells.py) and the nuclei
whose centre lies inside the mask give a density (per 1e6 px^2 of mask) and a mean size; their relative errors
are summarised per bin by the median (the cell-distribution seed's figure). PSNR and SSIM inside the mask too.
Two further readings of the same repaints: *patch* errors compare the density and mean size of all nuclei of
the whole image before and after the repaint (the seed's patch-level comparison, where the known pixels count
too), and *pooled* errors compare the nuclei of all a bin's masks together (total count, mean size over all
nuclei): whether the model follows the cell distribution, free of the counting noise of a few nuclei per mask.
With a classifier (``classifier``: a train-features file with a class head, or the user's TorchScript module),
*classification flips* are counted: the share of repaints whose predicted class differs from the intact image's,
and the share whose intact class is not even among the repaired image's two likeliest (the seed's top-2 reading).

A reference row needs no model: the same mask filled with the pixels of *another* intact image of the same
shape (real tissue, but not this image's). Its errors are what a sampler of real tissue that ignored the context
would score; with few nuclei per mask they show how much of the model's error is counting noise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from neurodiff.data import io
from neurodiff.data.temps import write_text_atomic
from neurodiff.errors import NeurodiffError

BINS = ((0.05, 0.15), (0.15, 0.30), (0.30, 0.50))
ERRORS = ("density_rel_err", "mean_size_rel_err", "patch_density_rel_err", "patch_mean_size_rel_err")
STATE = ".repaint-state"     # the repaints not yet in metrics.json, saved every minute (tasks/repaint_state.py)


def random_mask(spatial: tuple[int, ...], lo: float, hi: float, seed: int) -> np.ndarray:
    """A 2D mask of tears and blocks covering a fraction in [lo, hi) of the image (3D: the same in every slice)."""
    rng = np.random.default_rng(seed)
    target = rng.uniform(lo, hi)
    h, w = spatial[-2:]
    m = np.zeros((h, w), dtype=bool)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(10_000):
        if m.mean() >= target:
            break
        if rng.random() < 0.5:                                    # a block (missing section)
            bh, bw = (rng.uniform(0.05, 0.25, 2) * (h, w)).astype(int) + 1
            y, x = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
            new = np.zeros_like(m)
            new[y:y + bh, x:x + bw] = True
        else:                                                     # a tear: a thick segment
            (y0, x0), (y1, x1) = rng.uniform(0, 1, (2, 2)) * (h, w)
            width = rng.uniform(0.01, 0.04) * min(h, w) + 1
            d = np.array([y1 - y0, x1 - x0])
            t = np.clip(((yy - y0) * d[0] + (xx - x0) * d[1]) / max(d @ d, 1e-9), 0, 1)
            new = (yy - y0 - t * d[0]) ** 2 + (xx - x0 - t * d[1]) ** 2 <= width ** 2
        if (m | new).mean() <= hi:
            m |= new
    return np.broadcast_to(m, spatial).copy()


def _mean(total: float, n: int) -> float:
    return total / n if n else float("nan")


def _count(labels: np.ndarray, mask: np.ndarray) -> tuple[int, float]:
    """(number, summed area in px) of the nuclei whose centre lies in ``mask``."""
    from skimage.measure import regionprops

    areas = [p.area for p in regionprops(labels) if mask[tuple(int(round(c)) for c in p.centroid)]]
    return len(areas), float(np.sum(areas))


def _compare(lab_real, lab_other, mask, prefix: str) -> dict:
    """In-mask and whole-patch relative errors of density and mean size, and the in-mask counts for pooling."""
    full = np.ones_like(mask)
    (n_r, s_r), (n_o, s_o) = _count(lab_real, mask), _count(lab_other, mask)
    (pn_r, ps_r), (pn_o, ps_o) = _count(lab_real, full), _count(lab_other, full)
    return {f"{prefix}density_rel_err": _rel(n_o, n_r), f"{prefix}mean_size_rel_err": _rel(_mean(s_o, n_o), _mean(s_r, n_r)),
            f"{prefix}patch_density_rel_err": _rel(pn_o, pn_r),
            f"{prefix}patch_mean_size_rel_err": _rel(_mean(ps_o, pn_o), _mean(ps_r, pn_r)),
            f"{prefix}cells": n_o, f"{prefix}cell_area": s_o, "real_cells": n_r, "real_cell_area": s_r}


def _pooled(rows: list[dict], prefix: str) -> dict:
    n_r, s_r = sum(r["real_cells"] for r in rows), sum(r["real_cell_area"] for r in rows)
    n_o, s_o = sum(r[f"{prefix}cells"] for r in rows), sum(r[f"{prefix}cell_area"] for r in rows)
    return {f"{prefix}pooled_density_rel_err": _rel(n_o, n_r),
            f"{prefix}pooled_mean_size_rel_err": _rel(_mean(s_o, n_o), _mean(s_r, n_r))}


def class_probs(clf, normalizer, x: np.ndarray) -> np.ndarray:
    """Class probabilities [K] of one 2D image [C, H, W] in data units."""
    t = torch.from_numpy(np.ascontiguousarray(normalizer.normalize(x.astype(np.float32))))[None]
    return torch.softmax(clf(t).double(), dim=1)[0].numpy()


def compare_classes(p_real: np.ndarray, p_other: np.ndarray, prefix: str) -> dict:
    """Whether the likeliest class changed, and whether the intact class fell out of the two likeliest."""
    top = int(p_real.argmax())
    return {f"{prefix}class": int(p_other.argmax()), f"{prefix}flip": int(p_other.argmax() != top),
            f"{prefix}flip_top2": int(top not in np.argsort(-p_other, kind="stable")[:2])}


def _load_classifier(path, files):
    """(classifier, normaliser): a TorchScript module gets the intact set min-max scaled to [-1, 1]."""
    from neurodiff.metrics.evaluate import minmax_normalizer
    from neurodiff.metrics.features import load_classifier

    clf = load_classifier(path)
    return clf, clf.normalizer or minmax_normalizer((io.read(p)[0] for p in files), files[0].parent)


def _ssim_in_mask(image, xf, xr, rng, m) -> float | None:
    try:
        return float(image.ssim(xf, xr, rng, m)[0])
    except NeurodiffError:    # a mask too thin for one whole SSIM window
        return None


def _flip_rates(rows: list[dict], prefix: str) -> dict:
    return {f"{prefix}classification_flips": float(np.mean([r[f"{prefix}flip"] for r in rows])),
            f"{prefix}classification_flips_top2": float(np.mean([r[f"{prefix}flip_top2"] for r in rows]))}


def _rel(f: float, r: float) -> float:
    return abs(f - r) / abs(r) if r and np.isfinite(r) and np.isfinite(f) else float("nan")


def evaluate_inpainting(model, real_dir, out_dir, *, steps: int = 250, jump: int = 10, resample: int = 10,
                        jump_until: float = 1.0, eta: float = 1.0, tile: int | str | None = None,
                        overlap: int | None = None, limit: int | None = None, seed: int = 0,
                        masks_per_bin: int = 1, classifier: str | Path | None = None, precision: str = "auto",
                        batch: int = 1, progress: bool = True, resume: bool = False) -> dict:
    """Repaint random masks on the intact images of ``real_dir``; metrics.json + repaired images in ``out_dir``.
    ``batch`` > 1: that many masks of an image repainted at once, the whole image as one tile (``inpaint_batch``).
    metrics.json is rewritten after every image, or group of images a batch spans (``complete`` false until the
    last); ``resume`` keeps the images an earlier, cut-off run with the same settings finished in ``out_dir`` and
    repaints only the rest. The repaint
    (or batch) in progress is saved every minute, and each finished one until its image is in metrics.json, to
    ``out_dir/.repaint-state/``, and continued from there by a run that reaches it with the same inputs: a cut-off
    loses at most a minute of sampling."""
    from neurodiff.metrics import image
    from neurodiff.metrics.cells import segment_nuclei
    from neurodiff.tasks.inpaint import inpaint_array
    from neurodiff.tasks.repaint_state import clear

    real_dir, out_dir = Path(real_dir), Path(out_dir)
    files = sorted(p for p in real_dir.rglob("*") if p.is_file() and io.is_image_file(p))[:limit]
    if not files:
        raise NeurodiffError(f"{real_dir}: no image files")
    if isinstance(masks_per_bin, bool) or not isinstance(masks_per_bin, int) or masks_per_bin < 1:
        raise NeurodiffError(f"--masks-per-bin: expected an integer >= 1, got {masks_per_bin!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise NeurodiffError(f"--batch: expected an integer >= 1, got {batch!r}")
    if batch > 1 and tile == "auto":
        raise NeurodiffError(f"--tile auto picks a tile per mask; --batch {batch} repaints the whole image as one tile "
                             "(give --batch 1, or --tile 0)")
    clf = _load_classifier(classifier, files) if classifier else None
    settings = {"model": str(getattr(model, "source", "")), "real": str(real_dir),
                "images": [str(p.relative_to(real_dir)) for p in files], "steps": steps, "jump": jump,
                "resample": resample, "jump_until": jump_until, "eta": eta, "precision": precision, "tile": tile,
                "overlap": overlap, "seed": seed, "masks_per_bin": masks_per_bin, "batch": batch,
                "classifier": str(classifier) if classifier else None,
                **({"feather": "overlap // 2"} if tile != 0 else {})}   # tiles' soft bands: they change the fills
    state = out_dir / STATE
    rows, done, before = _resumed(out_dir, settings) if resume else ([], [], 0.0)

    def write(m: dict) -> dict:     # after every image: a cut-off run keeps what it did
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / "metrics.json", json.dumps(m, indent=2))
        clear(state)                # the repaints it holds are kept
        return m

    t0 = time.perf_counter()
    jobs = [(b, r) for b in range(len(BINS)) for r in range(masks_per_bin)]
    opts = dict(steps=steps, jump=jump, resample=resample, jump_until=jump_until, eta=eta, precision=precision)
    pending = [i for i in range(len(files)) if settings["images"][i] not in done]
    per_group = max(1, batch // len(jobs))     # a --batch above the masks per image takes several images at once
    for g in range(0, len(pending), per_group):
        group = []
        for i in pending[g:g + per_group]:
            x, meta = io.read(files[i])
            if not np.isfinite(x).all():
                raise NeurodiffError(f"{files[i]}: the image holds NaN or Inf values; expected intact images")
            if clf is not None and x.ndim != 3:
                raise NeurodiffError(f"{files[i]}: classification flips need 2D images, got a volume of shape "
                                     f"{x.shape}")
            if batch > 1 and tile and max(x.shape[1:]) > tile:
                raise NeurodiffError(f"{files[i]}: --batch {batch} repaints the whole image as one tile; it is larger "
                                     f"than --tile {tile} (give --tile 0 or --batch 1)")
            ks = [i * 10 + b + 1_000_003 * r for b, r in jobs]    # r = 0: the masks and noise of a one-mask-per-bin run
            masks = [random_mask(x.shape[1:], *BINS[b], seed * 100_003 + k) for (b, _), k in zip(jobs, ks)]
            group.append((i, x, meta, ks, masks))
        if batch > 1:
            ys, info = _repaint_batched(model, group, batch, seed, {**opts, "state": state})
            before += info["seconds_before"]
        for n, (i, x, meta, ks, masks) in enumerate(group):
            p = files[i]
            dims = x.ndim - 1
            lab_real = segment_nuclei(x, dims=dims)
            p_real = class_probs(*clf, x) if clf is not None else None
            donor = io.read(files[(i + 1) % len(files)])[0] if len(files) > 1 else None
            if donor is not None and donor.shape != x.shape:
                donor = None
            for j, (b, r) in enumerate(jobs):
                lo, hi = BINS[b]
                mask = masks[j]
                if batch > 1:
                    y = ys[n][j]
                else:
                    y, info = inpaint_array(model, x, mask, tile=tile, overlap=overlap, seed=seed + ks[j],
                                            progress=False, state=state, **opts)
                    before += info["seconds_before"]
                stem = p.stem.split('.')[0]
                name = f"{stem}_bin{b}{f'_m{r}' if r else ''}{p.name[len(stem):]}"
                io.write(out_dir / "repaired" / name, y, meta)
                io.write(out_dir / "masks" / name, mask[None].astype(np.uint8) * 255,
                         io.ImageMeta(meta.format, "uint8"))
                cells = _compare(lab_real, segment_nuclei(y, dims=dims), mask, "")
                area = mask.sum() / 1e6      # densities per 1e6 px of mask
                rng = float(x.max() - x.min()) or 1.0
                xr, xf = torch.from_numpy(x[None].astype(np.float32)), torch.from_numpy(y[None].astype(np.float32))
                m = torch.from_numpy(np.broadcast_to(mask, x.shape)[None].copy())
                rows.append({"file": p.name, "bin": f"{lo:.0%}-{hi:.0%}", "mask_fraction": float(mask.mean()),
                             "density_real": cells["real_cells"] / area, "density_repaired": cells["cells"] / area,
                             "mean_size_real": _mean(cells["real_cell_area"], cells["real_cells"]),
                             "mean_size_repaired": _mean(cells["cell_area"], cells["cells"]), **cells,
                             "psnr_in_mask": float(image.psnr(xf, xr, rng, m)[0]),
                             "ssim_in_mask": _ssim_in_mask(image, xf, xr, rng, m),
                             "network_calls_per_tile": info["network_calls_per_tile"], "tiles": info["tiles"],
                             "tile_px": info["tile_px"], "overlap_px": info["overlap_px"],
                             "tiles_blind": int(mask.all()) if batch > 1 else info["tiles_blind"]})   # batch: whole
                if p_real is not None:
                    rows[-1].update(class_real=int(p_real.argmax()),
                                    **compare_classes(p_real, class_probs(*clf, y), ""))
                if donor is not None:    # the reference: another real image's tissue in the same mask
                    pasted = np.where(np.broadcast_to(mask, x.shape), donor, x)
                    rows[-1].update(_compare(lab_real, segment_nuclei(pasted, dims=dims), mask, "reference_"))
                    if p_real is not None:
                        rows[-1].update(compare_classes(p_real, class_probs(*clf, pasted), "reference_"))
                if progress:
                    print(f"{p.name} mask {mask.mean():.0%}: density error {rows[-1]['density_rel_err']:.1%}, "
                          f"size error {rows[-1]['mean_size_rel_err']:.1%}", flush=True)
            done.append(settings["images"][i])
        # after each group of images (one image unless --batch takes several): its repaints are then in the file
        summary = write(_summary(rows, settings, done, before + time.perf_counter() - t0, clf is not None))
    return summary if pending else write(_summary(rows, settings, done, before, clf is not None))


def _repaint_batched(model, group: list, batch: int, seed: int, opts: dict) -> tuple[list[list], dict]:
    """The repaints of a group of (index, image, meta, keys, masks), ``batch`` masks (of images of one shape) per
    ``inpaint_batch`` call; [image][mask] like the group."""
    from neurodiff.tasks.inpaint import inpaint_batch

    flat = [(n, j) for n, g in enumerate(group) for j in range(len(g[4]))]
    ys, info, k, spent = [[None] * len(g[4]) for g in group], None, 0, 0.0
    while k < len(flat):
        shape = group[flat[k][0]][1].shape
        chunk = flat[k:k + batch]
        chunk = chunk[:next((c for c, (n, _) in enumerate(chunk) if group[n][1].shape != shape), len(chunk))]
        out, info = inpaint_batch(model, np.stack([group[n][1] for n, _ in chunk]),
                                  np.stack([group[n][4][j] for n, j in chunk]),
                                  [seed + group[n][3][j] for n, j in chunk], **opts)
        for (n, j), y in zip(chunk, out):
            ys[n][j] = y
        k, spent = k + len(chunk), spent + info["seconds_before"]
    return ys, {**info, "seconds_before": spent}


def _resumed(out_dir: Path, settings: dict) -> tuple[list[dict], list[str], float]:
    """The rows, finished images and seconds of an earlier run in ``out_dir`` made with the same ``settings``."""
    path = out_dir / "metrics.json"
    if not path.is_file() and any((out_dir / STATE).glob("*.pt")):   # cut off in the first image: it goes on
        return [], [], 0.0
    if not path.is_file():
        raise NeurodiffError(f"{path}: --resume given but there is no earlier evaluation to continue")
    try:
        old = json.loads(path.read_text())
        before = old["settings"]
    except (ValueError, KeyError) as e:
        raise NeurodiffError(f"{path}: not a metrics.json of evaluate --task inpainting --model ({e})") from None
    for k, v in settings.items():
        if before.get(k) != v:
            raise NeurodiffError(f"{path}: --resume needs the settings of the earlier run, which had {k}="
                                 f"{before.get(k)!r}, not {v!r}; give the same ones or another --out")
    return old["per_image"], list(old["images_done"]), float(old["seconds"])


def _summary(rows: list[dict], settings: dict, done: list[str], seconds: float, flips: bool) -> dict:
    """metrics.json: medians per mask-size bin and over all repaints, of the images finished so far."""
    per_bin = {}
    for lo, hi in BINS:
        sel = [r for r in rows if r["bin"] == f"{lo:.0%}-{hi:.0%}"]
        prefixes = ("", "reference_") if "reference_cells" in sel[0] else ("",)
        keys = ("psnr_in_mask",) + tuple(p + k for p in prefixes for k in ERRORS)
        per_bin[f"{lo:.0%}-{hi:.0%}"] = {k: float(np.nanmedian([r[k] for r in sel])) for k in keys}
        for pre in prefixes:
            per_bin[f"{lo:.0%}-{hi:.0%}"].update(_pooled(sel, pre))
        per_bin[f"{lo:.0%}-{hi:.0%}"]["masks"] = len(sel)
        for pre in (prefixes if flips else ()):
            per_bin[f"{lo:.0%}-{hi:.0%}"].update(_flip_rates(sel, pre))
        ssims = [r["ssim_in_mask"] for r in sel if r["ssim_in_mask"] is not None]
        per_bin[f"{lo:.0%}-{hi:.0%}"]["ssim_in_mask"] = float(np.median(ssims)) if ssims else None
    st = settings
    return {"task": "inpainting", "model": st["model"], "real": st["real"],
            **{k: st[k] for k in ("steps", "jump", "resample", "jump_until", "eta", "precision", "tile", "batch")},
            "network_calls_per_tile": rows[0]["network_calls_per_tile"], "n_images": len(done),
            **{k: max((r[k] for r in rows if k in r), default=None) for k in ("tile_px", "overlap_px")},
            "tiles_blind": sum(r.get("tiles_blind", 0) for r in rows),
            "complete": len(done) == len(st["images"]), "masks_per_bin": st["masks_per_bin"], "seconds": seconds,
            "per_bin_median": per_bin,
            **{f"{k}_median": float(np.nanmedian([r[k] for r in rows])) for k in ERRORS},
            **_pooled(rows, ""), **(_flip_rates(rows, "") if flips else {}),
            "classifier": st["classifier"], "images_done": done, "settings": st, "per_image": rows}


def summary_lines(m: dict) -> list[str]:
    """evaluate_inpainting's result as lines for the terminal: one per mask-size bin, then the cost."""
    lines = []
    for b, v in m["per_bin_median"].items():
        ref = (f" (another image's tissue pasted in: {v['reference_density_rel_err']:.1%}, "
               f"{v['reference_mean_size_rel_err']:.1%})" if "reference_density_rel_err" in v else "")
        lines.append(f"masks {b}: median density error {v['density_rel_err']:.1%}, mean-size error "
                     f"{v['mean_size_rel_err']:.1%}{ref}, PSNR in mask {v['psnr_in_mask']:.2f} dB; whole patch "
                     f"{v['patch_density_rel_err']:.1%}, {v['patch_mean_size_rel_err']:.1%}; all masks pooled "
                     f"{v['pooled_density_rel_err']:.1%}, {v['pooled_mean_size_rel_err']:.1%}"
                     + (f"; classification flips {v['classification_flips']:.0%} (top-2 "
                        f"{v['classification_flips_top2']:.0%})" if "classification_flips" in v else ""))
    return lines + [f"{m['network_calls_per_tile']} network calls per tile, {m['seconds']:.0f} s"]
