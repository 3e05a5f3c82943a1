"""Classification flips of the IHC inpainting bench's repaints (bench/inpaint_ihc.sh), with a classifier trained here.

The seed classifies cortical areas (cytoarchitecture); the IHC section has no such labels, so the classes here
are a cell-distribution proxy the nuclei themselves define: 128x128 crops of the *training* part of the section
(never the intact images) are sorted by their number of nuclei (metrics/cells.py) into terciles -- sparse,
medium, dense -- and `neurodiff train-features` trains its network with a class head on them. The tercile
thresholds also label the four held-out intact images, which gives the classifier's held-out accuracy. Every
stored repaint in OUT/eval_*/ (and the pasted-tissue reference of the same mask) is then classified; a flip is
a repaint whose likeliest class differs from the intact image's. No network of the diffusion model is run.
    python bench/inpaint_flips.py [OUT] [--steps 600]      (OUT: the folder of bench/inpaint_ihc.sh)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from neurodiff.data import io
from neurodiff.metrics.cells import segment_nuclei
from neurodiff.metrics.evaluate import train_features_on_folder
from neurodiff.metrics.features import load_classifier
from neurodiff.metrics.inpainting import class_probs, compare_classes

CLASSES = ("0_sparse", "1_medium", "2_dense")


def nuclei(x: np.ndarray) -> int:
    return int(segment_nuclei(x, dims=2).max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="bench/results/inpaint_ihc")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--stride", type=int, default=32)
    a = ap.parse_args()
    out = Path(a.out)
    train = io.read(out / "train" / "ihc_left.png")[0]
    c, s = a.crop, a.stride
    crops = [train[:, y:y + c, x:x + c] for y in range(0, train.shape[1] - c + 1, s)
             for x in range(0, train.shape[2] - c + 1, s)]
    counts = np.array([nuclei(x) for x in crops])
    t1, t2 = np.quantile(counts, [1 / 3, 2 / 3])
    label = lambda n: int(n > t1) + int(n > t2)   # noqa: E731
    folder = out / "classes"
    for i, (x, n) in enumerate(zip(crops, counts)):
        io.write(folder / CLASSES[label(n)] / f"crop_{i:03d}.png", x)
    feats = out / "classifier.safetensors"
    train_features_on_folder(folder, feats, size=64, steps=a.steps, batch=64, progress=True)
    clf, intact = load_classifier(feats), {}
    for p in sorted((out / "intact").glob("*.png")):
        x = io.read(p)[0]
        intact[p.stem] = (x, class_probs(clf, clf.normalizer, x), label(nuclei(x)))
    acc_intact = float(np.mean([pr.argmax() == lab for _, pr, lab in intact.values()]))
    acc_train = float(np.mean([class_probs(clf, clf.normalizer, x).argmax() == label(n) for x, n in zip(crops, counts)]))
    names = list(intact)
    result = {"classifier": str(feats), "train_crops": len(crops), "tercile_thresholds_nuclei": [float(t1), float(t2)],
              "accuracy_train_crops": acc_train, "accuracy_intact_heldout": acc_intact,
              "intact_classes": {k: CLASSES[int(v[1].argmax())] for k, v in intact.items()}, "schedules": {}}
    for ev in sorted(out.glob("eval_*")):
        m = json.loads((ev / "metrics.json").read_text())
        rows = []
        assert m["masks_per_bin"] == 1, f"{ev}: one mask per image and bin expected"
        for r in m["per_image"]:
            stem = Path(r["file"]).stem
            x, p_real, _ = intact[stem]
            b = ["5%-15%", "15%-30%", "30%-50%"].index(r["bin"])
            name = f"{stem}_bin{b}.png"
            y = io.read(ev / "repaired" / name)[0]
            mask = io.read(ev / "masks" / name)[0][0] > 0
            donor = intact[names[(names.index(stem) + 1) % len(names)]][0]
            pasted = np.where(mask[None], donor, x)
            rows.append({"bin": r["bin"], **compare_classes(p_real, class_probs(clf, clf.normalizer, y), ""),
                         **compare_classes(p_real, class_probs(clf, clf.normalizer, pasted), "reference_")})
        per_bin = {}
        for b in ("5%-15%", "15%-30%", "30%-50%"):
            sel = [r for r in rows if r["bin"] == b]
            per_bin[b] = {k: float(np.mean([r[k] for r in sel])) for k in ("flip", "flip_top2", "reference_flip")}
            per_bin[b]["repaints"] = len(sel)
        result["schedules"][ev.name] = {"network_calls": m["network_calls_per_tile"], "per_bin": per_bin,
                                        "flip": float(np.mean([r["flip"] for r in rows])),
                                        "reference_flip": float(np.mean([r["reference_flip"] for r in rows]))}
        print(ev.name, {b: f"{v['flip']:.0%} (pasted {v['reference_flip']:.0%})" for b, v in per_bin.items()},
              flush=True)
    (out / "flips.json").write_text(json.dumps(result, indent=2))
    print(f"classifier accuracy: training crops {acc_train:.0%}, held-out intact images {acc_intact:.0%}; "
          f"wrote {out / 'flips.json'}")


if __name__ == "__main__":
    main()
