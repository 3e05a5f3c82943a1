#!/usr/bin/env bash
# Reproduces the demo weights shipped in src/neurodiff/assets/demo/ with neurodiff's own train command.
# Run from the repository root in the project's venv. About 25 minutes on 2 CPU cores (bf16 autocast).
# The shipped weights were made with this script at commit 9f4f03e (then stopped at 48,000 images). A later
# commit keys each sample's training noise to its index in the global batch (so torchrun matches one process):
# a rerun now gives weights of the same recipe and quality, not the same bits.
set -euo pipefail
NIMG=${NIMG:-48000}   # = the demo preset's train.total_nimg
RUN=${RUN:-runs/demo-weights}
T=$(python -c "from neurodiff.demo import mni_template_path as p; print(p())")
neurodiff train demo --data "$T" --out "$RUN" --set train.total_nimg="$NIMG" \
  --set train.checkpoint_every_nimg=8000 --set train.preview_every_nimg=16000
neurodiff export "$RUN" "$RUN/model"
python bench/pack_demo_weights.py "$RUN/model" src/neurodiff/assets/demo
