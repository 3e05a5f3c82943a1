"""Side-by-side picture of repaints: per mask a row of the intact image and each evaluation's repaint, the mask
outlined in white (as bench/results/inpaint_he/gpu/fills_he0.png).
    python bench/inpaint_montage.py OUT.png INTACT_DIR EVAL_DIR [EVAL_DIR ...] --names he_0_bin1.png he_0_bin2_m1.png
INTACT_DIR holds the intact images (he_0.png); each EVAL_DIR is an `evaluate --task inpainting` output folder
(repaired/, masks/); a name is a repaint's file name there.
"""
import argparse
from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

from neurodiff.data import io


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("intact", type=Path)
    ap.add_argument("evals", type=Path, nargs="+")
    ap.add_argument("--names", nargs="+", required=True, help="repaint file names, one row each")
    args = ap.parse_args()
    rows = []
    for name in args.names:
        mask = io.read(args.evals[0] / "masks" / name)[0][0] > 0
        edge = find_boundaries(mask, mode="inner")
        intact = io.read(args.intact / f"{name.split('_bin')[0]}{Path(name).suffix}")[0][0]
        cols = []
        for im in [intact] + [io.read(d / "repaired" / name)[0][0] for d in args.evals]:
            im = im.astype(np.uint8).copy()
            im[edge] = 255
            cols.append(np.pad(im, 2, constant_values=255))
        rows.append(np.concatenate(cols, 1))
    io.write(args.out, np.concatenate(rows, 0)[None])
    print(f"wrote {args.out}: {len(rows)} masks x {1 + len(args.evals)} images")


if __name__ == "__main__":
    main()
