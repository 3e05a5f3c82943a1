"""Do the nuclei a fill makes depend on the window the network sees? A centred hole in real tissue, filled as one
tile of different sizes and as smaller tiles, over several seeds.

    python bench/inpaint_window.py MODEL IMAGES OUT [--block 160] [--crops 192] [--tiles 64/16]
                                   [--seeds 0,100] [--steps 50 --jump 5 --resample 5 --jump-until 0.5 --eta 0]

IMAGES: a folder of 2D one-channel images of one shape (e.g. OUT/intact of bench/inpaint_he.sh, 256x256 H&E);
MODEL: a model trained on that kind of image (e.g. OUT/run). In every image a centred square of ``--block`` px is
filled, with image n's seed SEED + n for each SEED of ``--seeds``, these ways:
- *whole*: the whole image as one tile (``--tile 0``);
- *crop C* for each C of ``--crops``: the centred C x C crop as one tile (C - block px of tissue around the hole
  instead of the whole image's), pasted back;
- *tiles T/O* for each T/O of ``--tiles``: tiles of T px overlapping by O (``inpaint``'s default soft band), the
  hole split among them.
``--blank``: nothing known -- the whole image is filled, each way above (so the image's content does not matter):
what the model makes of a window on its own, what a fill that sees nothing of the tissue drifts to.
The nuclei whose centre lies in the hole (``evaluate``'s segmentation of the whole image) are counted: number and
mean area per fill, per seed and over all seeds (and the number per image), with the intact images' as the
reference.
``--attention-log-scale N``: the network's self-attention logits are scaled by log L / log N over L > N tokens
(N: the tokens of a training crop at the attention level, e.g. 256 for 64^2 crops attended at 1/4 resolution), a
test of whether the fewer nuclei of windows larger than the training crop come from attention spread thinner.
OUT/window_BLOCK_seedsS1-S2.json (window_BLOCK_blank_... with ``--blank``, ..._attnlogN_... with that) gets them;
the figures are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from neurodiff.data import io
from neurodiff.metrics.cells import segment_nuclei
from neurodiff.metrics.inpainting import _count
from neurodiff.tasks.inpaint import inpaint_array
from neurodiff.train.state import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("images", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--block", type=int, default=160)
    ap.add_argument("--crops", default="192", help="one-tile crop sizes around the hole, comma-separated")
    ap.add_argument("--tiles", default="64/16", help="tile/overlap of tiled fills, comma-separated")
    ap.add_argument("--seeds", default="0,100")
    ap.add_argument("--blank", action="store_true", help="fill the whole image, not the hole (nothing known)")
    ap.add_argument("--attention-log-scale", type=int, default=0, metavar="N",
                    help="scale the self-attention logits by log(L) / log(N) where L > N tokens (N: a training "
                         "crop's tokens at the attention level): does the window effect come from attention spread "
                         "over more tokens than in training?")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--jump", type=int, default=5)
    ap.add_argument("--resample", type=int, default=5)
    ap.add_argument("--jump-until", type=float, default=0.5)
    ap.add_argument("--eta", type=float, default=0.0)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.attention_log_scale:
        if a.attention_log_scale < 2:
            raise SystemExit(f"--attention-log-scale {a.attention_log_scale}: expected N >= 2 tokens")
        scale_attention(a.attention_log_scale)
    model = load_model(a.model)
    kw = dict(steps=a.steps, jump=a.jump, resample=a.resample, jump_until=a.jump_until, eta=a.eta)
    crops = [int(c) for c in a.crops.split(",") if c.strip()]
    tiles = [tuple(int(v) for v in t.split("/")) for t in a.tiles.split(",") if t.strip()]
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    files = sorted(p for p in a.images.iterdir() if p.is_file())
    images = [io.read(f)[0] for f in files]
    shape = images[0].shape
    if any(x.shape != shape or x.ndim != 3 or x.shape[0] != 1 for x in images):
        raise SystemExit(f"{a.images}: expected one-channel 2D images of one shape")
    if any(not a.block < c <= min(shape[1:]) for c in crops):
        raise SystemExit(f"--crops: expected sizes above --block {a.block} and at most the images' {list(shape[1:])}")
    lo = [(n - a.block) // 2 for n in shape[1:]]
    hole = np.zeros(shape[1:], bool)
    hole[lo[0]:lo[0] + a.block, lo[1]:lo[1] + a.block] = True
    fill_mask = np.ones_like(hole) if a.blank else hole          # what is filled; the nuclei are counted in the hole

    def crop_fill(x, c, seed):
        y0, x0 = [(n - c) // 2 for n in shape[1:]]
        win = (slice(None), slice(y0, y0 + c), slice(x0, x0 + c))
        y = x.copy()
        y[win] = inpaint_array(model, x[win], fill_mask[win[1:]], tile=0, seed=seed, **kw)[0]
        return y

    fills = {"whole": lambda x, s: inpaint_array(model, x, fill_mask, tile=0, seed=s, **kw)[0]}
    fills |= {f"crop {c}": lambda x, s, c=c: crop_fill(x, c, s) for c in crops}
    fills |= {f"tiles {t}/{o}": lambda x, s, t=t, o=o: inpaint_array(model, x, fill_mask, tile=t, overlap=o, seed=s,
                                                                     **kw)[0] for t, o in tiles}
    count = lambda y: _count(segment_nuclei(y[None], dims=2), hole)     # noqa: E731
    intact = [count(x[0]) for x in images]
    res = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()} | {"images": len(files)},
           "intact": {"nuclei": int(sum(n for n, _ in intact)), "mean_area_px": sum(s for _, s in intact)
                      / max(sum(n for n, _ in intact), 1), "nuclei_per_image": [n for n, _ in intact]},
           "per_seed": {}, "seconds": {k: 0.0 for k in fills}}
    for seed in seeds:
        row = {}
        for name, fill in fills.items():
            n = area = 0
            each = []
            for i, x in enumerate(images):
                t = time.perf_counter()
                y = fill(x, seed + i)
                res["seconds"][name] += time.perf_counter() - t
                assert np.array_equal(y[:, ~fill_mask], x[:, ~fill_mask]), f"{name}: known pixels changed"
                c, s = count(y[0])
                n, area = n + c, area + s
                each.append(c)
            row[name] = {"nuclei": n, "mean_area_px": area / max(n, 1), "nuclei_per_image": each}
            print(f"seed {seed}: {name}: {n} nuclei of mean area {area / max(n, 1):.1f} px", flush=True)
        res["per_seed"][str(seed)] = row
    res["all_seeds"] = {k: {"nuclei": sum(r[k]["nuclei"] for r in res["per_seed"].values()),
                            "mean_area_px": sum(r[k]["nuclei"] * r[k]["mean_area_px"] for r in res["per_seed"].values())
                            / max(sum(r[k]["nuclei"] for r in res["per_seed"].values()), 1)} for k in fills}
    name = (f"window_{a.block}{'_blank' if a.blank else ''}"
            f"{f'_attnlog{a.attention_log_scale}' if a.attention_log_scale else ''}_seeds{'-'.join(map(str, seeds))}.json")
    tmp = a.out / f"{name}.tmp"
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(a.out / name)
    ref = res["intact"]
    print(f"hole {a.block}^2 in {len(files)} images of {list(shape[1:])}; intact: {ref['nuclei']} nuclei of mean area "
          f"{ref['mean_area_px']:.1f} px (per seed)")
    print("| fill | " + " | ".join(f"seed {s}: nuclei (vs intact), mean area px (vs intact)" for s in seeds) + " |")
    for k in fills:
        cells = [f"{r[k]['nuclei']} ({r[k]['nuclei'] / ref['nuclei'] - 1:+.0%}), {r[k]['mean_area_px']:.1f} "
                 f"({r[k]['mean_area_px'] / ref['mean_area_px'] - 1:+.0%})" for r in res["per_seed"].values()]
        print(f"| {k} | " + " | ".join(cells) + " |")


def scale_attention(n_train: int) -> None:
    """Self-attention with its logits times max(1, log L / log n_train) over L tokens (entropy-invariant scaling):
    softmax over more tokens than in training keeps about the sharpness it had there."""
    import math

    import torch.nn.functional as F

    from neurodiff.nn import layers

    def forward(self, x, emb=None):
        n, c, *spatial = x.shape
        q, k, v = (t.transpose(-1, -2) for t in self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, -1)
                   .unbind(1))
        scale = max(1.0, math.log(q.shape[-2]) / math.log(n_train)) / math.sqrt(q.shape[-1])
        h = F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(-1, -2).reshape(n, c, *spatial)
        return x + self.proj(h)

    layers.Attention.forward = forward


if __name__ == "__main__":
    main()
