"""README rows of the IHC inpainting bench: one row per schedule, from its eval_*/metrics.json.

  python bench/inpaint_table.py bench/results/inpaint_ihc
"""

import json
import sys
from pathlib import Path

BINS = ("5%-15%", "15%-30%", "30%-50%")


def pct(v) -> str:
    return "–" if v != v else f"{100 * v:.0f}"


def cells(b: dict, key: str) -> str:
    return " / ".join(pct(b[k][key]) for k in BINS) + " %"


def load_runs(root: Path) -> list[dict]:
    """The metrics.json of every eval_* folder, each with "schedule" (steps_jump_resample), "folder_tag" ("" or
    " (TAG)": inpaint_ihc.sh's suffix after the schedule in the folder's name) and "tag" (that, and for a cut-off
    run how many of its images it finished)."""
    runs = []
    for p in sorted(root.glob("eval_*/metrics.json")):
        m = json.loads(p.read_text())
        m["schedule"] = f"{m['steps']}_{m['jump']}_{m['resample']}"
        tag = p.parent.name[len(f"eval_{m['schedule']}"):].lstrip("_")
        m["tag"] = m["folder_tag"] = f" ({tag})" if tag else ""
        if m.get("complete") is False:    # a cut-off run (evaluate writes metrics.json after every image)
            m["tag"] += f" (cut off: {m['n_images']} of {len(m['settings']['images'])} images)"
        runs.append(m)
    return runs


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/inpaint_ihc")
    runs = load_runs(root)
    runs.sort(key=lambda m: (-m["network_calls_per_tile"], m["steps"]))
    print("| schedule (steps / jump / resample) | network calls | time | density, in mask | size, in mask "
          "| density, whole patch | size, whole patch | density, pooled | size, pooled | PSNR in mask (dB) |")
    print("|---" * 10 + "|")
    for m in runs:
        b = m["per_bin_median"]
        print(f"| {m['steps']} / {m['jump']} / {m['resample']}{m['tag']} | {m['network_calls_per_tile']} | "
              f"{m['seconds'] / 60:.1f} min | {cells(b, 'density_rel_err')} | {cells(b, 'mean_size_rel_err')} | "
              f"{cells(b, 'patch_density_rel_err')} | {cells(b, 'patch_mean_size_rel_err')} | "
              f"{cells(b, 'pooled_density_rel_err')} | {cells(b, 'pooled_mean_size_rel_err')} | "
              + " / ".join(f"{b[k]['psnr_in_mask']:.1f}" for k in BINS) + " |")
    m = runs[0]
    if "reference_density_rel_err" in m["per_bin_median"][BINS[0]]:
        b = m["per_bin_median"]
        print(f"| reference: another intact image's tissue pasted in | 0 | – | {cells(b, 'reference_density_rel_err')} | "
              f"{cells(b, 'reference_mean_size_rel_err')} | {cells(b, 'reference_patch_density_rel_err')} | "
              f"{cells(b, 'reference_patch_mean_size_rel_err')} | {cells(b, 'reference_pooled_density_rel_err')} | "
              f"{cells(b, 'reference_pooled_mean_size_rel_err')} | – |")
    for m in runs:   # over all 5-50 % masks: the seed's single figure
        print(f"{m['steps']}/{m['jump']}/{m['resample']}{m['tag']}: all masks, median density {pct(m['density_rel_err_median'])} %, "
              f"size {pct(m['mean_size_rel_err_median'])} %; whole patch {pct(m['patch_density_rel_err_median'])} %, "
              f"{pct(m['patch_mean_size_rel_err_median'])} %; pooled {pct(m['pooled_density_rel_err'])} %, "
              f"{pct(m['pooled_mean_size_rel_err'])} %")


if __name__ == "__main__":
    main()
