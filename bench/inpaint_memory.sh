#!/usr/bin/env bash
# Peak memory of tiled inpainting on a large image against an untiled 1024x1024 run, with the model trained by
# bench/inpaint_ihc.sh. Memory does not depend on the number of steps, so both runs use 2 (an untiled
# 1024x1024 forward pass takes minutes on 2 CPU cores: attention over 65,536 positions).
#   bash bench/inpaint_memory.sh [OUT] [SIZE]
set -euo pipefail
OUT=${1:-bench/results/inpaint_ihc}
SIZE=${2:-8192}
PY=${PY:-python}
$PY - "$OUT" "$SIZE" <<'PYEOF'
import sys
from pathlib import Path
import numpy as np
from neurodiff.data import io
from neurodiff.metrics.inpainting import random_mask
out, size = Path(sys.argv[1]), int(sys.argv[2])
h = io.read(out / "train" / "ihc_left.png")[0][0]
for n in (1024, size):
    img = np.tile(h, (n // h.shape[0] + 1, n // h.shape[1] + 1))[:n, :n]
    io.write(out / "mem" / f"section_{n}.tif", img[None])
    m = np.zeros((n, n), np.uint8)
    if n == 1024:
        m[:] = random_mask((n, n), 0.05, 0.06, seed=1) * 255
    else:   # a few tears and one missing block over the big section
        for k in range(4):
            y = (k + 1) * n // 5
            m[y:y + 24, n // 8:n - n // 8] = 255
        m[n // 3:n // 3 + 300, n // 2:n // 2 + 500] = 255
    io.write(out / "mem" / f"mask_{n}.png", m[None])
PYEOF
for N in 1024 "$SIZE"; do
  TILE=$([ "$N" = 1024 ] && echo 0 || echo 128)
  /usr/bin/time -v neurodiff inpaint "$OUT/run" --image "$OUT/mem/section_$N.tif" --mask "$OUT/mem/mask_$N.png" \
    --out "$OUT/mem/repaired_$N.tif" --steps 2 --resample 1 --tile "$TILE" --no-progress 2>&1 \
    | grep -E "filled|Maximum resident|Elapsed" | tee "$OUT/mem/memory_$N.txt"
done
