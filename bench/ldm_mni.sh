#!/usr/bin/env bash
# Latent diffusion in 3D with a covariate, on real data: the MNI152 template under random affine scaling
# (bench/ldm_mni.py prepare: 64x80x64 volumes of 2.5 mm, covariate = brain volume in mL), 48 for training and
# 8 held out. Steps: KL autoencoder (4x per axis, 4 latent channels; L1 + SSIM + KL + PatchGAN after a warm-up),
# held-out reconstruction PSNR/SSIM, latent diffusion conditioned on the brain volume (MLP + channels + tokens,
# CFG dropout 0.1), conditional samples at requested volumes and unconditional ones from the same model,
# brain volume measured on the samples (Pearson r), MS-SSIM diversity next to the real one.
#   bash bench/ldm_mni.sh [OUT] [AE_IMAGES] [LDM_IMAGES]
set -euo pipefail
OUT=${1:-bench/results/ldm_mni}
AE_NIMG=${2:-3000}
LDM_NIMG=${3:-12000}
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
[ -d "$OUT/train" ] || $PY "$HERE/ldm_mni.py" prepare "$OUT" --n-train 48 --n-test 8
if [ ! -d "$OUT/ae/checkpoints" ]; then
  /usr/bin/time -v neurodiff train-ae ae-3d --data "$OUT/train" --out "$OUT/ae" --no-progress \
    --set data.size=[] --set data.crop=[32,40,32] --set autoencoder.channel_mult=[1,2,2] --set autoencoder.channels=16 \
    --set autoencoder.z_channels=4 --set autoencoder.checkpointing=false --set autoencoder.adv_start_nimg=$((AE_NIMG / 2)) \
    --set train.precision=bf16 --set train.batch=4 --set train.lr=2e-4 --set train.warmup_nimg=200 \
    --set train.total_nimg="$AE_NIMG" --set train.log_every_nimg=100 --set train.checkpoint_every_nimg=1000 \
    --set train.preview_every_nimg=1000 2> "$OUT/ae_time.txt"
fi
neurodiff reconstruct "$OUT/ae" --input "$OUT/test" --out "$OUT/recon" --no-progress
neurodiff evaluate --task paired --real "$OUT/test" --fake "$OUT/recon" --out "$OUT/report_recon"
if [ ! -f "$OUT/ldm/latents.safetensors" ] || [ ! -d "$OUT/ldm/checkpoints" ]; then
  /usr/bin/time -v neurodiff train ldm-3d --data "$OUT/train" --codec "$OUT/ae" --covariates "$OUT/train_covariates.csv" \
    --out "$OUT/ldm" --no-progress --set data.size=[] --set model.channels=32 --set model.checkpointing=false \
    --set train.precision=bf16 --set train.batch=8 --set train.warmup_nimg=500 --set train.total_nimg="$LDM_NIMG" \
    --set train.ema_halflife_nimg=2000 --set train.log_every_nimg=200 --set train.checkpoint_every_nimg=2000 \
    --set train.preview_every_nimg=4000 2> "$OUT/ldm_time.txt"
fi
# requested brain volumes: 16 evenly over the training range
$PY - "$OUT" <<'PYEOF'
import csv, sys
out = sys.argv[1]
v = [float(r["brain_volume_ml"]) for r in csv.DictReader(open(f"{out}/train_covariates.csv"))]
lo, hi = min(v), max(v)
with open(f"{out}/requested.csv", "w") as f:
    f.write("brain_volume_ml\n" + "".join(f"{lo + (hi - lo) * k / 15:.1f}\n" for k in range(16)))
PYEOF
rm -rf "$OUT/cond" "$OUT/uncond"
/usr/bin/time -v neurodiff sample "$OUT/ldm" --n 16 --covariates "$OUT/requested.csv" --steps 50 --sampler ddim \
  --guidance 1.0 --out "$OUT/cond" --no-progress 2> "$OUT/sample_time.txt"
neurodiff sample "$OUT/ldm" --n 16 --steps 50 --sampler ddim --out "$OUT/uncond" --no-progress
$PY "$HERE/ldm_mni.py" measure "$OUT" "$OUT/cond"
$PY "$HERE/ldm_mni.py" measure "$OUT" "$OUT/uncond"
