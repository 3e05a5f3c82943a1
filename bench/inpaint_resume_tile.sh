#!/usr/bin/env bash
# A stopped inpainting run resumed inside the tile it was sampling. One 128x128 tile (the grey of scikit-image's
# immunohistochemistry image, a real stained section with nuclei) with a 40x50 box repainted by the demo model at
# RePaint's classic 250/10/10 (2410 network calls): once uninterrupted, once stopped by SIGINT after STOP_S seconds
# (the tile's state is saved every minute) and finished with --resume. Prints both runs' lines, the times, the
# step the resumed run went on from, and whether both outputs are equal.
#   bash bench/inpaint_resume_tile.sh [OUT] [STOP_S]          (defaults: /tmp/inpaint_resume_tile, 150)
set -uo pipefail
OUT=${1:-/tmp/inpaint_resume_tile}
STOP_S=${2:-150}
MODEL=${MODEL:-src/neurodiff/assets/demo}
PY=${PY:-python}
mkdir -p "$OUT"
$PY - "$OUT" <<'PYEOF' || exit 1
import sys
import numpy as np
from skimage import color, data
from neurodiff.data import io
grey = (color.rgb2gray(data.immunohistochemistry()) * 255).round().astype(np.uint8)[200:328, 150:278]
io.write(f"{sys.argv[1]}/ihc_128.zarr", grey[None], io.ImageMeta(format="zarr", dtype="uint8"))
PYEOF
A=(--image "$OUT/ihc_128.zarr" --box 40:80,30:80 --tile 128 --steps 250 --jump 10 --resample 10 --no-progress)
rm -rf "$OUT/whole.zarr" "$OUT/cut.zarr" "$OUT"/.cut.zarr.partial*
t0=$(date +%s)
neurodiff inpaint "$MODEL" "${A[@]}" --out "$OUT/whole.zarr" || exit 1
t1=$(date +%s)
timeout -s INT "$STOP_S" neurodiff inpaint "$MODEL" "${A[@]}" --out "$OUT/cut.zarr"
echo "stopped after ${STOP_S} s (exit $?); saved state: $(ls "$OUT"/.cut.zarr.partial.repaint/ 2>/dev/null || echo none)"
t2=$(date +%s)
neurodiff inpaint "$MODEL" "${A[@]}" --out "$OUT/cut.zarr" --resume || exit 1
t3=$(date +%s)
echo "uninterrupted: $((t1 - t0)) s; stopped run: $((t2 - t1)) s; resumed run: $((t3 - t2)) s (wall clock, with start-up)"
$PY - "$OUT" <<'PYEOF'
import sys
import numpy as np
from neurodiff.data import io
a, b = io.read(f"{sys.argv[1]}/whole.zarr")[0], io.read(f"{sys.argv[1]}/cut.zarr")[0]
print(f"resumed output equals the uninterrupted one: {np.array_equal(a, b)}")
PYEOF
