#!/usr/bin/env bash
# Peak memory of tiled inpainting on a large section against an untiled 1024x1024 run. The section is scikit-image's
# immunohistochemistry image (hematoxylin, 512x512) tiled to SIZE x SIZE, with tears and a missing block.
# Memory does not depend on the number of steps or on how well the model is trained, so the runs use one network
# call (--steps 1 --resample 1) of MODEL (default: the shipped demo weights, whose UNet is the same as
# bench/inpaint_ihc.sh's: 32 channels, levels x1 x2 x2, attention at 1/4 resolution).
# The big section's mask is a TIFF, so that both image and mask are read region by region.
# BIG (optional, e.g. 32768): also a BIG x BIG section (1 GiB at 32768), TIFF in and out, against the same
# section repainted with whole arrays in memory (a .npy output: the path every format but TIFF and zarr takes).
#   bash bench/inpaint_memory.sh [OUT] [SIZE] [BIG]    MODEL=bench/results/inpaint_ihc/run bash ... to use that one
set -euo pipefail
OUT=${1:-bench/results/inpaint_memory}
SIZE=${2:-8192}
BIG=${3:-}
PY=${PY:-python}
MODEL=${MODEL:-src/neurodiff/assets/demo}
mkdir -p "$OUT"
$PY - "$OUT" "$SIZE" $BIG <<'PYEOF'
import sys
from pathlib import Path
import numpy as np
from skimage import color, data
from neurodiff.data import io
from neurodiff.metrics.inpainting import random_mask
out, size, big = Path(sys.argv[1]), int(sys.argv[2]), [int(a) for a in sys.argv[3:]]
h = color.rgb2hed(data.immunohistochemistry())[..., 0]
h = (np.clip((h - h.min()) / (np.percentile(h, 99.9) - h.min()), 0, 1) * 255).round().astype(np.uint8)
for n in (1024, size, *big):
    img = np.tile(h, (n // h.shape[0] + 1, n // h.shape[1] + 1))[:n, :n]
    io.write(out / f"section_{n}.tif", img[None])
    m = np.zeros((n, n), np.uint8)
    if n == 1024:
        m[:] = random_mask((n, n), 0.05, 0.06, seed=1) * 255
    else:   # a few tears and one missing block over the big section
        for k in range(4):
            y = (k + 1) * n // 5
            m[y:y + 24, n // 8:n - n // 8] = 255
        m[n // 3:n // 3 + 300, n // 2:n // 2 + 500] = 255
    io.write(out / (f"mask_{n}.png" if n == 1024 else f"mask_{n}.tif"), m[None])
    if n != 1024:
        print(f"section {n}x{n}: {float((m > 0).mean()):.2%} masked")
    del img, m
io.write(out / f"section_{size}.zarr", io.read(out / f"section_{size}.tif")[0])
PYEOF
run() {  # NAME IMAGE MASK OUTPUT TILE
  /usr/bin/time -v neurodiff inpaint "$MODEL" --image "$2" --mask "$3" --out "$4" --steps 1 --resample 1 \
    --tile "$5" --no-progress 2>&1 | grep -E "filled|Maximum resident|Elapsed" | tee "$OUT/memory_$1.txt"
}
run 1024_untiled "$OUT/section_1024.tif" "$OUT/mask_1024.png" "$OUT/repaired_1024.tif" 0
run "${SIZE}_tiled_tiff" "$OUT/section_$SIZE.tif" "$OUT/mask_$SIZE.tif" "$OUT/repaired_$SIZE.tif" 128
run "${SIZE}_tiled_zarr" "$OUT/section_$SIZE.zarr" "$OUT/mask_$SIZE.tif" "$OUT/repaired_$SIZE.zarr" 128
if [ -n "$BIG" ]; then
  run "${BIG}_tiled_tiff" "$OUT/section_$BIG.tif" "$OUT/mask_$BIG.tif" "$OUT/repaired_$BIG.tif" 128
  run "${BIG}_tiled_in_memory" "$OUT/section_$BIG.tif" "$OUT/mask_$BIG.tif" "$OUT/repaired_$BIG.npy" 128
  $PY -c "import sys, numpy as np; from neurodiff.data import tiffio
a, _ = tiffio.open_lazy(sys.argv[1]); b = np.load(sys.argv[2], mmap_mode='r')
same = all(np.array_equal(a[:, y:y + 2048], b[None, y:y + 2048]) for y in range(0, b.shape[0], 2048))
print('TIFF output equals the in-memory output:', same)" "$OUT/repaired_$BIG.tif" "$OUT/repaired_$BIG.npy" \
    | tee "$OUT/memory_${BIG}_same.txt"
  rm -f "$OUT/section_$BIG.tif" "$OUT/mask_$BIG.tif" "$OUT/repaired_$BIG.tif" "$OUT/repaired_$BIG.npy"
fi
