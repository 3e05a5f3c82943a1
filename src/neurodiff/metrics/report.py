"""A self-contained HTML report: metric tables, real vs generated grids (embedded PNG), intensity histograms (SVG)."""

from __future__ import annotations

import base64
import html
import io as _io

import numpy as np
import torch

from neurodiff.tasks.generate import grid, to_uint8_display


def _png_b64(img: np.ndarray) -> str:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _grid_img(x: torch.Tensor, n: int = 16) -> str:
    pick = np.unique(np.linspace(0, len(x) - 1, min(n, len(x))).round().astype(int))  # spread over the set
    tiles = to_uint8_display(x[torch.from_numpy(pick)])
    return f'<img alt="grid" src="data:image/png;base64,{_png_b64(grid(tiles, ncol=min(8, len(tiles))))}">'


def polyline(xs, ys, colour: str) -> str:
    """An SVG polyline through pixel coordinates."""
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>'


def _histogram_svg(xr: torch.Tensor, xf: torch.Tensor, bins: int = 64, w: int = 480, h: int = 200) -> str:
    edges = np.linspace(-1, 1, bins + 1)
    hr, _ = np.histogram(xr.numpy().ravel(), edges, density=True)
    hf, _ = np.histogram(xf.numpy().ravel(), edges, density=True)
    top = max(hr.max(), hf.max(), 1e-9)
    # log scale: background voxels dominate the histogram of brain and microscopy images
    scale = lambda v: h - 20 - (h - 30) * np.log1p(v) / np.log1p(top)  # noqa: E731
    xs = np.linspace(30, w - 10, bins)
    line = lambda vals, colour: polyline(xs, [scale(v) for v in vals], colour)  # noqa: E731
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">'
            f'<rect width="{w}" height="{h}" fill="white"/>{line(hr, "#1f77b4")}{line(hf, "#d62728")}'
            f'<text x="30" y="{h - 4}" font-size="11">-1 (low)</text>'
            f'<text x="{w - 70}" y="{h - 4}" font-size="11">+1 (high)</text>'
            f'<text x="40" y="14" font-size="12" fill="#1f77b4">real</text>'
            f'<text x="80" y="14" font-size="12" fill="#d62728">generated</text></svg>')


def _fmt(v) -> str:
    if isinstance(v, dict) and "mean" in v and "sd" in v:
        return f"{v['mean']:.4g} ± {v['sd']:.2g}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(m: dict, xr: torch.Tensor, xf: torch.Tensor) -> str:
    """The report page for a metrics dict and the normalised real / generated tensors."""
    skip = {"per_condition", "conditioning", "paired", "cells", "normalizer", "uncertainty"}
    summary = [{"metric": k, "value": v} for k, v in m.items() if k not in skip]
    parts = [f"<h1>neurodiff evaluation — {html.escape(m['task'])}</h1>",
             "<h2>Summary</h2>", _table(summary),
             "<p>Sampled metrics show mean ± sd over the repeats. FD/KID/precision/recall use the features named "
             "above; swd_patches (sliced Wasserstein on patches) needs no network; MS-SSIM diversity should match "
             "the real value (neither 0 nor 1).</p>",
             "<h2>Real vs generated</h2><div class='row'><figure>", _grid_img(xr),
             "<figcaption>real</figcaption></figure><figure>", _grid_img(xf),
             "<figcaption>generated</figcaption></figure></div>",
             "<h2>Intensity histograms (normalised units, log density)</h2>", _histogram_svg(xr, xf)]
    if m.get("per_condition"):
        parts += ["<h2>Per condition</h2>", _table(m["per_condition"])]
    if m.get("conditioning"):
        parts += ["<h2>Conditioning check</h2>",
                  _table([{"condition": k, **v} for k, v in m["conditioning"].items()])]
    if m.get("paired"):
        parts += ["<h2>Paired quality</h2>", _table([m["paired"]["mean"]]),
                  "<details><summary>per file</summary>", _table(m["paired"]["per_file"][:500]), "</details>"]
    if m.get("uncertainty"):
        from neurodiff.metrics.uncertainty import sparsification_svg
        u = m["uncertainty"]
        flat = {k: v for k, v in u.items() if not isinstance(v, (dict, list))}
        parts += ["<h2>Uncertainty calibration</h2>", _table([flat]),
                  "<p>Spearman: rank correlation of the uncertainty map with the absolute error (higher is better). "
                  "Sparsification: error of the pixels kept after removing the most uncertain ones; AUSE is the "
                  "area between that curve and the oracle's (lower is better).</p>", sparsification_svg(u),
                  "<details><summary>per file</summary>", _table(u["per_file"][:500]), "</details>"]
    if m.get("cells"):
        flat = {k: v for k, v in m["cells"].items() if not isinstance(v, (dict, list))}
        parts += ["<h2>Cell statistics</h2>", _table([flat])]
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}img{image-rendering:pixelated;"
             "max-width:520px}.row{display:flex;gap:2em}figure{margin:0}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>neurodiff evaluation</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
