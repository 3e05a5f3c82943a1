#!/usr/bin/env bash
# Paired translation on real data: T1 -> grey-matter probability map, axial slices of the MNI152 2009 template
# (both ship with nilearn, 8-bit; GM = probability x 255), 128x128 PNG. The middle 20 % of the slices are
# held out, with 3 slices either side kept out of training. The diffusion model (`translate`) and the regression
# baseline (`translate-regression`, the same UNet, L1) get the same budget of random 64x64 crops. Held-out sources
# are translated (16 samples each for the diffusion model) and scored against the real GM slices: PSNR/SSIM of the
# mean, of one sample and of the baseline; Spearman(std, |error|) and AUSE of the uncertainty. Last, the time of
# 16 samples of a 256x256 input (a held-out slice upsampled) on this machine.
#   bash bench/translate_mni.sh [OUT] [IMAGES_PER_RUN]
set -euo pipefail
OUT=${1:-bench/results/translate_mni}
NIMG=${2:-32000}
STEPS=${STEPS:-10}    # sampler steps (DPM-Solver++(2M)) for the held-out translations
PY=${PY:-python}
mkdir -p "$OUT"
$PY - "$OUT" <<'PYEOF'
import sys
from pathlib import Path
import numpy as np, torch
from neurodiff import config
from neurodiff.data import io
from neurodiff.data.datasets import ImageDataset
from neurodiff.demo import mni_template_path
from neurodiff.tasks.superres import upsample
out = Path(sys.argv[1])
t1 = mni_template_path()
gm = t1.with_name(t1.name.replace("_t1_", "_gm_"))
for name, path in (("t1", t1), ("gm", gm)):
    (out / "vol" / name).mkdir(parents=True, exist_ok=True)
    x, meta = io.read(path)
    if x.dtype != np.uint8:   # nilearn ships both as 8-bit (GM probability x 255); keep any other build 8-bit too
        x = (np.clip(x / max(float(x.max()), 1e-9), 0, 1) * 255).round().astype(np.uint8)
    io.write(out / "vol" / name / "mni.nii.gz", x, meta)
data = config.DataConfig(path=str(out / "vol"), target="gm", source="t1", kind="slices", axis=2,
                         crop_foreground=True, min_foreground=0.02, size=[128, 128], resize_mode="fit",
                         normalizer=config.NormalizerConfig(kind="minmax"))
ds = ImageDataset(data)
n = len(ds)
lo, hi, gap = int(0.40 * n), int(0.60 * n), 3
meta = io.ImageMeta(format="png", dtype="uint8")
for i in range(n):
    it = ds[(i, 0)]
    part = "heldout" if lo <= i < hi else None if lo - gap <= i < hi + gap else "train"
    if part is None:
        continue
    io.write(out / part / "target" / f"slice_{i:03d}.png", ds.normalizer.denormalize(it["x"], "uint8"), meta)
    io.write(out / part / "source" / f"slice_{i:03d}.png", ds.source_normalizer.denormalize(it["cond_image"], "uint8"),
             meta)
    if part == "heldout":   # the head (T1 > 0): uncertainty is also scored without the empty background
        head = ds.source_normalizer.denormalize(it["cond_image"], "uint8") > 0
        io.write(out / part / "head" / f"slice_{i:03d}.png", (head * 255).astype(np.uint8), meta)
mid = (lo + hi) // 2
big = upsample(ds[(mid, 0)]["cond_image"][None], [256, 256])[0]
io.write(out / "input256" / f"slice_{mid:03d}.png", ds.source_normalizer.denormalize(big, "uint8"), meta)
print(f"{n} slices: {hi - lo} held out ({lo}..{hi - 1}), {n - (hi - lo) - 2 * gap} for training")
PYEOF
for P in translate translate-regression; do
  if [ ! -d "$OUT/run_$P/checkpoints" ]; then
    time neurodiff train "$P" --data "$OUT/train" --out "$OUT/run_$P" --no-progress \
      --set data.crop=[64,64] --set data.normalizer.kind=minmax --set train.precision="${PRECISION:-auto}" \
      --set train.total_nimg="$NIMG" --set train.warmup_nimg=500 --set train.ema_halflife_nimg=2000 \
      --set train.lr=1e-3 --set train.checkpoint_every_nimg=4000 --set train.preview_every_nimg=100000
  fi
done
time neurodiff translate "$OUT/run_translate" --input "$OUT/heldout/source" --samples 16 --steps "$STEPS" --tile 0 \
  --save-samples \
  --out "$OUT/pred_diffusion" --no-progress
time neurodiff translate "$OUT/run_translate-regression" --input "$OUT/heldout/source" --tile 0 \
  --out "$OUT/pred_regression" --no-progress
ev() { neurodiff evaluate --task paired --real "$OUT/heldout/target" --fake "$1" --out "$2" --data-range 255 "${@:3}"; }
ev "$OUT/pred_diffusion/mean" "$OUT/report_mean" --uncertainty "$OUT/pred_diffusion/std"
ev "$OUT/pred_diffusion/mean" "$OUT/report_mean_head" --uncertainty "$OUT/pred_diffusion/std" --mask "$OUT/heldout/head"
ev "$OUT/pred_diffusion/median" "$OUT/report_median"
ev "$OUT/pred_diffusion/samples/sample_000" "$OUT/report_sample0"
ev "$OUT/pred_regression/mean" "$OUT/report_regression"
ev "$OUT/pred_regression/mean" "$OUT/report_regression_head" --mask "$OUT/heldout/head"
# 16 samples of one 256x256 input, in 64x64 tiles (the training crop), batched over the samples
/usr/bin/time -v neurodiff translate "$OUT/run_translate" --input "$OUT/input256" --samples 16 --steps "$STEPS" \
  --out "$OUT/pred_256" --no-progress 2>&1 | grep -E "translated|Maximum resident|Elapsed" | tee "$OUT/time_256.txt"
