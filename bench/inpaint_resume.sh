#!/usr/bin/env bash
# A stopped inpainting run resumed: the 8192x8192 zarr section of bench/inpaint_memory.sh (made there when missing),
# inpainted into a .zarr once uninterrupted, once stopped by SIGINT after STOP_S seconds and finished with --resume;
# prints the tiles written before the stop, the times and peak memory, and whether both outputs are equal.
#   bash bench/inpaint_resume.sh [OUT] [STOP_S]          (OUT as for bench/inpaint_memory.sh; STOP_S default 30)
set -uo pipefail
OUT=${1:-bench/results/inpaint_memory}
STOP_S=${2:-30}
MODEL=${MODEL:-src/neurodiff/assets/demo}
PY=${PY:-python}
HERE=$(dirname "$0")
if [ ! -d "$OUT/section_8192.zarr" ]; then
  # only the data part of the memory bench: its python block, run here
  sed -n '/^\$PY - "\$OUT" "\$SIZE" .*<<.PYEOF.$/,/^PYEOF$/p' "$HERE/inpaint_memory.sh" | sed '1d;$d' > "$OUT.data.py"
  mkdir -p "$OUT" && $PY "$OUT.data.py" "$OUT" 8192 && rm -f "$OUT.data.py" || exit 1
fi
A=(--image "$OUT/section_8192.zarr" --mask "$OUT/mask_8192.tif" --steps 1 --resample 1 --tile 128 --no-progress)
rm -rf "$OUT/resume_whole.zarr" "$OUT/resume_cut.zarr" "$OUT/.resume_cut.zarr.partial" "$OUT/.resume_cut.zarr.partial.json"
/usr/bin/time -v neurodiff inpaint "$MODEL" "${A[@]}" --out "$OUT/resume_whole.zarr" 2>&1 | grep -E "filled|Maximum resident"
timeout -s INT "$STOP_S" neurodiff inpaint "$MODEL" "${A[@]}" --out "$OUT/resume_cut.zarr"
echo "stopped after ${STOP_S} s (exit $?); tiles written: $($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['tiles_done'])" "$OUT/.resume_cut.zarr.partial.json")"
/usr/bin/time -v neurodiff inpaint "$MODEL" "${A[@]}" --out "$OUT/resume_cut.zarr" --resume 2>&1 | grep -E "filled|Maximum resident"
$PY - "$OUT" <<'PYEOF'
import sys
import numpy as np
from neurodiff.data import io
out = sys.argv[1]
a, b = io.read(f"{out}/resume_whole.zarr")[0], io.read(f"{out}/resume_cut.zarr")[0]
x, m = io.read(f"{out}/section_8192.zarr")[0], io.read(f"{out}/mask_8192.tif")[0] > 0
print(f"resumed output equals the uninterrupted one: {np.array_equal(a, b)}; known pixels bit-identical: "
      f"{np.array_equal(b[~m], x[~m])}")
PYEOF
rm -rf "$OUT/resume_whole.zarr" "$OUT/resume_cut.zarr"
