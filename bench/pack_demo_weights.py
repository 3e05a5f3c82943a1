"""Pack an exported demo model for shipping: weights as float16 safetensors, the machine's data path removed.

usage: python bench/pack_demo_weights.py EXPORTED_MODEL_DIR src/neurodiff/assets/demo
"""

import json
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
weights = {k: v.half().contiguous() if v.is_floating_point() else v for k, v in load_file(src / "model.safetensors").items()}
save_file(weights, str(dst / "model.safetensors"), metadata={"note": "neurodiff demo weights (float16)"})
cfg = json.loads((src / "config.json").read_text())
cfg["data"]["path"] = Path(cfg["data"]["path"]).name   # the demo sets the real path at run time
(dst / "config.json").write_text(json.dumps(cfg, indent=2))
print(f"packed {len(weights)} tensors into {dst}")
