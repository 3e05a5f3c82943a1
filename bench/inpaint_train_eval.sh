#!/usr/bin/env bash
# Shared by bench/inpaint_ihc.sh and bench/inpaint_he.sh: train the bench's 2D model on OUT/train (random 64x64
# crops; skipped when OUT/run has checkpoints), then `evaluate --task inpainting` on OUT/intact per schedule.
#   DATA_SIZE=[512,384] TILE=128 bash bench/inpaint_train_eval.sh OUT TRAIN_IMAGES
# Env: SCHEDULES, MASKS, CLASSIFIER, PRECISION, TILE, TAG as documented in bench/inpaint_ihc.sh; DATA_SIZE
# (data.size): the size the training images are read at, their own size here (the tiny preset's is 32x32);
# JUMP_UNTIL, ETA: RePaint's --jump-until and --eta (default 1 and 1, RePaint's own; name the runs with TAG);
# TRAIN_SET: further `--set` overrides of the training (e.g. "--set model.channels=64 --set train.batch=128");
# BATCH: evaluate --batch (masks of an image repainted at once, whole image as one tile; for GPUs).
# LIMIT: evaluate --limit (the first LIMIT intact images).
# RESUME=1: an evaluation whose folder holds a metrics.json or saved repaints (.repaint-state/) of a cut-off run
# continues it (evaluate --resume; the repaint in progress goes on from its last minute).
set -euo pipefail
OUT=$1
NIMG=$2
if [ ! -d "$OUT/run/checkpoints" ]; then
  time neurodiff train tiny --data "$OUT/train" --out "$OUT/run" --no-progress \
    ${DATA_SIZE:+--set data.size="$DATA_SIZE"} --set data.crop=[64,64] \
    --set data.rot90=true --set data.hflip=true --set data.vflip=true \
    --set model.channels=32 --set model.channel_mult=[1,2,2] --set model.attn_levels=[2] --set model.num_heads=4 \
    --set train.precision=bf16 --set train.batch=16 --set train.total_nimg="$NIMG" --set train.warmup_nimg=500 \
    --set train.ema_halflife_nimg=2000 --set train.checkpoint_every_nimg=4000 --set train.preview_every_nimg=100000 \
    ${TRAIN_SET:-}
fi
# schedules: RePaint's classic 250/10/10 (2410 calls), cheaper ones, and plain replacement without jumps
MASKS=${MASKS:-1}
for S in ${SCHEDULES:-250,10,10 100,10,10 100,10,5 50,5,5 250,10,1}; do
  IFS=, read -r ST JU RE <<< "$S"
  EVAL_OUT="$OUT/eval_${ST}_${JU}_${RE}${TAG:-}"
  AGAIN=""
  [ -n "${RESUME:-}" ] && { [ -f "$EVAL_OUT/metrics.json" ] || compgen -G "$EVAL_OUT/.repaint-state/*.pt" > /dev/null; } && AGAIN=--resume
  time neurodiff evaluate --task inpainting --model "$OUT/run" --real "$OUT/intact" --tile "${TILE:-128}" \
    --steps "$ST" --jump "$JU" --resample "$RE" --masks-per-bin "$MASKS" \
    --jump-until "${JUMP_UNTIL:-1}" --eta "${ETA:-1}" --batch "${BATCH:-1}" ${LIMIT:+--limit "$LIMIT"} \
    ${CLASSIFIER:+--classifier "$CLASSIFIER"} \
    --precision "${PRECISION:-auto}" --out "$EVAL_OUT" $AGAIN
done
