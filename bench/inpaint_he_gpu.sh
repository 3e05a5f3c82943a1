#!/usr/bin/env bash
# The H&E inpainting bench (bench/inpaint_he.sh) at GPU scale: a wider model (64 channels) trained on many more
# crops (batch 128, cut off after TRAIN_S seconds: the newest checkpoint is the model), then five RePaint
# schedules evaluated side by side on the same masks and noise, MASKS masks per image and bin, each image's masks
# repainted in one batch (`evaluate --batch`), so every cheaper schedule can be paired with the 2410-call one
# (bench/inpaint_paired.py).
#   bash bench/inpaint_he_gpu.sh OUT [TRAIN_IMAGES] [TRAIN_S]
# OUT must hold train/ and intact/ from bench/inpaint_he_data.py (run here when they are missing).
# Env: MASKS (default 5), EVAL_S (each evaluation's time limit, default 300 s), JOBS (the schedules, see below),
# BATCH (evaluate --batch, default 3 * MASKS: one image's masks; 4x that takes the four images at once),
# RESUME=1 (run again on the same OUT: training is skipped, a cut-off evaluation continues where it stopped —
# metrics.json is written after every image, the batch in progress saved every minute — so a long one can span
# several calls of a lent GPU).
set -uo pipefail
OUT=$1
NIMG=${2:-1000000}
TRAIN_S=${3:-240}
MASKS=${MASKS:-5}
HERE=$(dirname "$0")
[ -d "$OUT/intact" ] || python "$HERE/inpaint_he_data.py" "$OUT" || exit 1
export DATA_SIZE=[128,128] TILE=256 MASKS BATCH=${BATCH:-$((3 * MASKS))} SCHEDULES=" "
TRAIN_SET="--set model.channels=64 --set train.batch=128 --set train.workers=6 --set train.warmup_nimg=5000
  --set train.ema_halflife_nimg=20000 --set train.checkpoint_every_nimg=50000 --set train.log_every_nimg=10000
  --set train.preview_every_nimg=100000000" timeout "$TRAIN_S" bash "$HERE/inpaint_train_eval.sh" "$OUT" "$NIMG"
rc=$?
if [ ! -d "$OUT/run/checkpoints" ] || [ -z "$(ls "$OUT/run/checkpoints")" ]; then
  echo "training failed (exit $rc) before its first checkpoint" >&2
  exit 1
fi
echo "training: exit $rc (124 = cut off at ${TRAIN_S} s), newest checkpoint $(ls "$OUT/run/checkpoints" | tail -1)"
# "steps,jump,resample JUMP_UNTIL ETA [TAG]" per job: RePaint's classic (2410 calls), 910, 230, early jumps only
JOBS=${JOBS:-"250,10,10 1 1;100,10,10 1 1;50,5,5 1 1;50,5,5 0.5 0 _until0.5_eta0;100,10,10 0.5 0 _until0.5_eta0"}
pids=()
IFS=';' read -ra jobs <<< "$JOBS"
for job in "${jobs[@]}"; do
  read -r S U E T <<< "$job"
  SCHEDULES=$S JUMP_UNTIL=$U ETA=$E TAG=${T:-} timeout "${EVAL_S:-300}" bash "$HERE/inpaint_train_eval.sh" "$OUT" "$NIMG" \
    > "$OUT/log_${S//,/_}${T:-}.txt" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || echo "an evaluation ended with exit $? (see $OUT/log_*.txt)" >&2; done
tail -n 5 "$OUT"/log_*.txt
