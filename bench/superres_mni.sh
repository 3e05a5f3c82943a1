#!/usr/bin/env bash
# x2 super-resolution on real data: axial slices of the MNI152 T1 template (ships with nilearn) at 128x128.
# A contiguous band of slices is held out (with a gap on each side); two sr-x2 stages are trained on random 64x64
# crops of the rest, one with noise-conditioning augmentation and one without; each super-resolves the held-out
# slices from their 2x area-downsampled versions (sampled in 64x64 tiles), scored against the originals next to
# bicubic upsampling. Last, a 64^2 sample of the shipped demo model goes through three x2 stages to 512^2.
# FD/KID of each row against the held-out slices come from a feature network trained on the training slices.
#   bash bench/superres_mni.sh [OUT] [IMAGES_PER_RUN]
#   FD_ONLY=1 bash bench/superres_mni.sh [OUT]     # only the FD/KID step, on the outputs already in OUT
set -euo pipefail
OUT=${1:-bench/results/superres_mni}
NIMG=${2:-12000}
PY=${PY:-python}
mkdir -p "$OUT"
TEMPLATE=$($PY -c "from neurodiff.demo import mni_template_path; print(mni_template_path())")
$PY - "$OUT" "$TEMPLATE" <<'EOF'
import sys
from pathlib import Path
import numpy as np, torch
from neurodiff import config
from neurodiff.data import io
from neurodiff.data.datasets import ImageDataset
from neurodiff.tasks.superres import downsample, upsample
out, template = Path(sys.argv[1]), sys.argv[2]
data = config.DataConfig(path=template, kind="slices", axis=2, crop_foreground=True, min_foreground=0.02,
                         size=[128, 128], resize_mode="fit",
                         normalizer=config.NormalizerConfig(kind="minmax"))
ds = ImageDataset(data)
n = len(ds)
lo, hi = int(0.45 * n), int(0.55 * n)              # held out: the middle 10 % of the slices
gap = 3                                           # and 3 slices either side kept out of training
norm = ds.normalizer          # back to the template's own units (uint8), the units of the demo base model
meta = io.ImageMeta(format="png", dtype="uint8")
for i in range(n):
    x = ds[i]["x"]
    if lo <= i < hi:
        io.write(out / "hr_heldout" / f"slice_{i:03d}.png", norm.denormalize(x, "uint8"), meta)
        low = downsample(x[None], 2)
        io.write(out / "lr_heldout" / f"slice_{i:03d}.png", norm.denormalize(low[0], "uint8"), meta)
        io.write(out / "bicubic" / f"slice_{i:03d}.png", norm.denormalize(upsample(low, [128, 128])[0], "uint8"), meta)
    elif not lo - gap <= i < hi + gap:
        io.write(out / "hr_train" / f"slice_{i:03d}.png", norm.denormalize(x, "uint8"), meta)
print(f"{n} slices: {hi - lo} held out ({lo}..{hi - 1}), {n - (hi - lo) - 2 * gap} for training")
EOF
if [ "${FD_ONLY:-0}" != 1 ]; then
for AUG in 0.2 0; do
  RUN="$OUT/run_aug$AUG"
  time neurodiff train sr-x2 --data "$OUT/hr_train" --out "$RUN" --no-progress \
    --set data.size=[128,128] --set data.crop=[64,64] --set data.normalizer.kind=minmax \
    --set data.sr_noise_aug=$AUG --set train.precision=bf16 --set train.total_nimg="$NIMG" \
    --set train.warmup_nimg=500 --set train.ema_halflife_nimg=2000 --set train.lr=1e-3 \
    --set train.checkpoint_every_nimg=4000 --set train.preview_every_nimg=100000
  time neurodiff cascade stages="$RUN" --lowres "$OUT/lr_heldout" --n 1000 --out "$OUT/sr_aug$AUG" --no-progress
  neurodiff evaluate --task paired --real "$OUT/hr_heldout" --fake "$OUT/sr_aug$AUG" --out "$OUT/report_aug$AUG"
done
neurodiff evaluate --task paired --real "$OUT/hr_heldout" --fake "$OUT/bicubic" --out "$OUT/report_bicubic"
# three stages, 64 -> 128 -> 256 -> 512, from the shipped demo model; the x2 stage (trained on 128^2 slices) is
# applied at every scale, in 64x64 tiles, so memory stays that of one tile batch
/usr/bin/time -v neurodiff cascade base=src/neurodiff/assets/demo \
  stages="$OUT/run_aug0.2,$OUT/run_aug0.2,$OUT/run_aug0.2" --n 2 --out "$OUT/cascade512" --keep --no-progress \
  2>&1 | grep -E "wrote|Maximum resident|Elapsed" | tee "$OUT/cascade512.txt"
fi
# distribution distances of each row to the held-out slices, in a feature space learnt from the training slices
neurodiff train-features --data "$OUT/hr_train" --out "$OUT/features.safetensors" --size 64 --steps 500 --no-progress
for ROW in bicubic sr_aug0 sr_aug0.2; do
  neurodiff evaluate --task generation --real "$OUT/hr_heldout" --fake "$OUT/$ROW" --out "$OUT/fd_$ROW" \
    --features "$OUT/features.safetensors" --repeats 5
done
$PY - "$OUT" <<'EOF' | tee "$OUT/fd.txt"
import json, sys
for row in ("bicubic", "sr_aug0", "sr_aug0.2"):
    m = json.load(open(f"{sys.argv[1]}/fd_{row}/metrics.json"))
    print(f"{row:10s} FD {m['fd']:.3f}  KID {m['kid']['mean']*1e3:.2f} +- {m['kid']['sd']*1e3:.2f} (x1e-3)  "
          f"SWD {m['swd_patches']['mean']:.4f}  n={m['n_fake']}")
EOF
