"""What keying and saving a repaint's state costs per tile: inpaint_array on a 1024x1024 random uint8 image with
every seventh row masked (121 tiles of 128, one network call each, the demo model), without and with ``state``
(a temporary folder), twice each, alternating.
    python bench/inpaint_state_cost.py"""

import tempfile
import time

import numpy as np

from neurodiff.tasks.inpaint import inpaint_array
from neurodiff.train.state import load_model

model = load_model("src/neurodiff/assets/demo")
img = (np.random.default_rng(0).random((1, 1024, 1024)) * 255).astype(np.uint8)
mask = np.zeros((1024, 1024), bool)
mask[::7, :] = True
for _ in range(2):
    for state in (None, tempfile.mkdtemp()):
        t = time.perf_counter()
        _, info = inpaint_array(model, img, mask, steps=1, resample=1, tile=128, on_tile=lambda n: None, state=state)
        print(f"{'with' if state else 'without'} state: {info['tiles']} tiles in {time.perf_counter() - t:.2f} s")
