#!/usr/bin/env bash
# RePaint judged by nuclei statistics on real microscopy: scikit-image's immunohistochemistry section (colon,
# 512x512, ships with scikit-image), hematoxylin channel (nuclei bright). A model is trained on random 64x64 crops
# of the left three quarters; the right quarter, cut into four 128x128 intact images, is never seen in training.
# Each intact image gets random tear/block masks of 5-15 %, 15-30 % and 30-50 %, is repainted, and the nuclei
# inside the mask are compared with the intact image's. Run with the classic schedule and cheaper ones.
# Every row also reports a reference that needs no model: the mask filled with another intact image's tissue.
#   bash bench/inpaint_ihc.sh [OUT] [TRAIN_IMAGES]
#   SCHEDULES="250,10,10 100,10,10" MASKS=2 bash bench/inpaint_ihc.sh ...   (schedules to run, masks per bin)
#   CLASSIFIER=OUT/classifier.safetensors ...   (also count classification flips; bench/inpaint_flips.py makes one)
#   PRECISION=bf16 TILE=64 TAG=_bf16_t64 ...   (the network's precision, the tile size, a suffix for eval_* folders)
set -euo pipefail
OUT=${1:-bench/results/inpaint_ihc}
NIMG=${2:-16000}
PY=${PY:-python}
mkdir -p "$OUT"
$PY - "$OUT" <<'PYEOF'
import sys
from pathlib import Path
import numpy as np
from skimage import color, data
from neurodiff.data import io
out = Path(sys.argv[1])
h = color.rgb2hed(data.immunohistochemistry())[..., 0]
h = (np.clip((h - h.min()) / (np.percentile(h, 99.9) - h.min()), 0, 1) * 255).round().astype(np.uint8)
io.write(out / "train" / "ihc_left.png", h[None, :, :384])
for k in range(4):
    io.write(out / "intact" / f"ihc_right_{k}.png", h[None, 128 * k:128 * (k + 1), 384:])
PYEOF
DATA_SIZE=[512,384] TILE=${TILE:-128} bash "$(dirname "$0")/inpaint_train_eval.sh" "$OUT" "$NIMG"
