#!/usr/bin/env bash
# Slice-by-slice volumes on real data: the MNI152 T1 template's axial slices (ships with nilearn) as one stack.
# Fine-tunes the shipped depth model into a depth + 2-neighbour-slice model, generates whole stacks and compares
# their coherence and depth with the real stack (same crop, same 64x64 resampling).
#   bash bench/volume_mni.sh [OUT] [MINUTES]
set -euo pipefail
OUT=${1:-bench/results/volume_mni}
MINUTES=${2:-12}
PY=${PY:-python}
mkdir -p "$OUT"
TEMPLATE=$($PY -c "from neurodiff.demo import mni_template_path; print(mni_template_path())")
IMG=$($PY -c "print(int($MINUTES * 60 * 35))")   # ~35 images/s with bf16 on 2 CPU cores
time neurodiff train demo --data "$TEMPLATE" --out "$OUT/run" --no-progress \
  --set data.context_slices=2 --set data.min_foreground=0 \
  --set train.init_from=src/neurodiff/assets/demo --set train.lr=2e-4 --set train.warmup_nimg=0 \
  --set train.total_nimg="$IMG" --set train.checkpoint_every_nimg=4000 --set train.preview_every_nimg=100000
time neurodiff volume "$OUT/run" --n 4 --steps 20 --guidance 2 --out "$OUT/generated" --no-progress
# the real stack, preprocessed as the model saw it (crop to the head, 64x64 per slice, the model's normaliser)
$PY - "$OUT" <<'EOF'
import sys
from pathlib import Path
import numpy as np, torch
from neurodiff.data import io
from neurodiff.data.datasets import ImageDataset
from neurodiff.data.normalize import Normalizer
from neurodiff.train.state import load_model
out = Path(sys.argv[1])
cfg = load_model(out / "run").cfg
ds = ImageDataset(cfg.data, normalizer=Normalizer(**cfg.data.meta["normalizer"]))
x = torch.stack([ds[i]["x"] for i in range(len(ds))], dim=-1)           # [1, H, W, Z]
arr = ds.normalizer.denormalize(x, "uint8")
io.write(out / "real" / "mni152_t1.nii.gz", arr, io.ImageMeta(format="nifti", dtype="uint8",
                                                               affine=cfg.data.meta["affine"]))
print("real stack", arr.shape)
EOF
neurodiff evaluate --task volume --axis 2 --real "$OUT/real" --fake "$OUT/generated" --out "$OUT/report"
