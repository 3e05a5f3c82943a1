"""Coherence of stacks built slice by slice: adjacent-slice similarity, through-plane smoothness, depth accuracy.

A stack is [Z, H, W] (the depth axis first). Real and generated stacks are compared on the same measures:
- adjacent-slice similarity: Pearson correlation of slice z with slice z+1, as a profile over relative depth;
- through-plane smoothness: mean |x[z+1] - x[z]| over the mean in-plane |gradient| (x-z and y-z reslices of a
  coherent stack look like the real ones: a ratio near the real stacks', not a jump at every slice);
- depth: a ridge regressor on 16x16-pooled real slices, each standardised to zero mean and unit variance so a
  change of brightness or contrast does not read as a change of depth, predicts each generated slice's relative
  depth (Pearson r against the depth it was generated for).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from neurodiff.data import io
from neurodiff.data.temps import write_text_atomic
from neurodiff.errors import NeurodiffError
from neurodiff.metrics.evaluate import ridge_fit_predict

PROFILE_POINTS = 50


def adjacent_similarity(stack: np.ndarray) -> np.ndarray:
    """[Z-1] Pearson correlation between consecutive slices of a [Z, H, W] stack."""
    a = stack.reshape(len(stack), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    norm = np.sqrt((a ** 2).sum(1)) + 1e-12
    return (a[:-1] * a[1:]).sum(1) / (norm[:-1] * norm[1:])


def through_plane_smoothness(stack: np.ndarray) -> float:
    """Mean |difference along depth| / mean in-plane |difference| of a [Z, H, W] stack."""
    s = stack.astype(np.float64)
    dz = np.abs(np.diff(s, axis=0)).mean()
    dxy = 0.5 * (np.abs(np.diff(s, axis=1)).mean() + np.abs(np.diff(s, axis=2)).mean())
    return float(dz / (dxy + 1e-12))


def profile(values: np.ndarray, points: int = PROFILE_POINTS) -> np.ndarray:
    """A per-slice profile resampled to ``points`` positions of relative depth in [0, 1]."""
    return np.interp(np.linspace(0, 1, points), np.linspace(0, 1, len(values)), values)


def pooled(stack: np.ndarray, size: int = 16) -> np.ndarray:
    """[Z, size*size] features: each slice average-pooled to size x size, then standardised per slice."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(stack.astype(np.float32))[:, None]
    f = F.adaptive_avg_pool2d(t, size).flatten(1).numpy().astype(np.float64)
    return (f - f.mean(1, keepdims=True)) / (f.std(1, keepdims=True) + 1e-6)


def depth_correlation(real: list[np.ndarray], fake: list[np.ndarray]) -> dict:
    """Pearson r between requested and predicted relative depth; the regressor's own r on held-out real slices."""
    feats = np.concatenate([pooled(s) for s in real])
    depth = np.concatenate([np.linspace(0, 1, len(s)) for s in real])
    held = np.arange(len(feats)) % 5 == 0
    r_real = np.corrcoef(ridge_fit_predict(feats[~held], depth[~held], feats[held], False), depth[held])[0, 1]
    pred = ridge_fit_predict(feats, depth, np.concatenate([pooled(s) for s in fake]), False)
    want = np.concatenate([np.linspace(0, 1, len(s)) for s in fake])
    return {"pearson_r": float(np.corrcoef(pred, want)[0, 1]), "pearson_r_real_heldout": float(r_real)}


def stacks(folder: str | Path, axis: int) -> tuple[list[np.ndarray], list[str]]:
    """All 3D files of a folder as [Z, H, W] stacks (channels averaged), depth taken along spatial ``axis``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NeurodiffError(f"{folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and io.is_image_file(p))
    out, names = [], []
    for p in files:
        a, _ = io.read(p)
        if a.ndim != 4:
            raise NeurodiffError(f"{p}: expected a 3D stack, got shape {list(a.shape)}")
        if not 0 <= axis < 3:
            raise NeurodiffError(f"--axis: expected 0, 1 or 2, got {axis}")
        out.append(np.moveaxis(a.astype(np.float32).mean(0), axis, 0))
        names.append(p.name)
    if not out:
        raise NeurodiffError(f"{folder}: no 3D stacks found")
    return out, names


def evaluate_volumes(real_dir, fake_dir, out_dir, axis: int = 0) -> dict:
    """Coherence and depth measures of generated vs real stacks -> metrics.json + report.html in out_dir."""
    real, _ = stacks(real_dir, axis)
    fake, names = stacks(fake_dir, axis)
    for s, n in zip(fake, names):
        if len(s) < 2:
            raise NeurodiffError(f"{n}: a stack needs at least 2 slices along axis {axis}")
    prof_r = np.mean([profile(adjacent_similarity(s)) for s in real], 0)
    prof_f = np.mean([profile(adjacent_similarity(s)) for s in fake], 0)
    adj_r = float(np.mean([adjacent_similarity(s).mean() for s in real]))
    adj_f = float(np.mean([adjacent_similarity(s).mean() for s in fake]))
    sm_r = float(np.mean([through_plane_smoothness(s) for s in real]))
    sm_f = float(np.mean([through_plane_smoothness(s) for s in fake]))
    m = {"task": "volume", "num_real": len(real), "num_fake": len(fake), "axis": axis,
         "adjacent_similarity_real": adj_r, "adjacent_similarity_fake": adj_f,
         "adjacent_similarity_rel_diff": (adj_f - adj_r) / abs(adj_r),
         "through_plane_smoothness_real": sm_r, "through_plane_smoothness_fake": sm_f,
         "profile_real": prof_r.tolist(), "profile_fake": prof_f.tolist(),
         "depth": depth_correlation(real, fake)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "metrics.json", json.dumps(m, indent=1))
    write_text_atomic(out / "report.html", _report(m))
    return m




def _report(m: dict) -> str:
    w, h, pad = 520, 240, 40
    ys = m["profile_real"] + m["profile_fake"]
    lo, hi = min(ys), max(ys)

    def line(vals, color):
        pts = " ".join(f"{pad + i / (len(vals) - 1) * (w - 2 * pad):.1f},"
                       f"{h - pad - (v - lo) / (hi - lo + 1e-9) * (h - 2 * pad):.1f}" for i, v in enumerate(vals))
        return f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>'

    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-size="12">'
           f'{line(m["profile_real"], "#1f77b4")}{line(m["profile_fake"], "#d62728")}'
           f'<text x="{pad}" y="15" fill="#1f77b4">real</text><text x="{pad + 50}" y="15" fill="#d62728">generated'
           f'</text><text x="{w / 2}" y="{h - 8}" text-anchor="middle">relative depth</text>'
           f'<text x="5" y="{pad}">{hi:.3f}</text><text x="5" y="{h - pad}">{lo:.3f}</text></svg>')
    d = m["depth"]
    rows = "".join(f"<tr><td>{k}</td><td>{m[k]:.4f}</td></tr>" for k in (
        "adjacent_similarity_real", "adjacent_similarity_fake", "adjacent_similarity_rel_diff",
        "through_plane_smoothness_real", "through_plane_smoothness_fake"))
    rows += (f"<tr><td>depth Pearson r (generated)</td><td>{d['pearson_r']:.4f}</td></tr>"
             f"<tr><td>depth Pearson r (held-out real)</td><td>{d['pearson_r_real_heldout']:.4f}</td></tr>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>neurodiff volume report</title></head><body>"
            f"<h1>Stack coherence</h1><p>{m['num_fake']} generated vs {m['num_real']} real stacks, depth along "
            f"axis {m['axis']}.</p><table border='1' cellpadding='4'>{rows}</table>"
            f"<h2>Adjacent-slice similarity along depth</h2>{svg}</body></html>")
