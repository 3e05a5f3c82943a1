"""What `--tile auto` adds to `neurodiff inpaint`'s pass over the mask: the time of ``scan_mask`` (hash and count, in
bands of SCAN_PIXELS) with and without the search for the largest square (``SquareScan``), on an N x N mask.

    python bench/inpaint_square_scan.py [N]     (default 32768)

Masks: four long tears and a block given as ``--box`` es (sparse, the kind bench/inpaint_memory.sh uses); every
pixel filled with probability 1/2 (one random band of rows, read again for every band); every pixel filled.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from neurodiff.tasks import inpaint_cli
from neurodiff.tasks.masks import RegionMask


class Repeated:
    """A mask image [1, N, N] whose every band of rows is the same pre-drawn band (read like a lazy file)."""

    def __init__(self, n: int, band: np.ndarray):
        self.shape, self.dtype, self.band = (1, n, n), np.dtype(np.uint8), band

    def __getitem__(self, key):
        rows = range(*key[1].indices(self.shape[1]))
        return self.band[None, :len(rows)]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 32768
    rows = inpaint_cli.SCAN_PIXELS // n
    rng = np.random.default_rng(0)
    k = n // 8
    tears = [f"{k + i * k}:{k + i * k + 40},{k}:{7 * k}" for i in range(4)] + [f"{6 * k}:{6 * k + 300},{k}:{k + 500}"]
    masks = {"tears and a block (boxes)": RegionMask((n, n), None, inpaint_cli.box_bounds(tears, (n, n))),
             "half the pixels, at random": RegionMask((n, n), Repeated(n, rng.random((rows, n)) < 0.5)),
             "every pixel": RegionMask((n, n), Repeated(n, np.ones((rows, n), np.uint8)))}
    print(f"{n}x{n} mask, bands of {rows} rows")
    for name, mask in masks.items():
        times = {}
        for square in (False, True):
            t = time.perf_counter()
            _, count, side = inpaint_cli.scan_mask(mask, square=square)
            times[square] = time.perf_counter() - t
        print(f"{name}: {count} px to fill, square {side} px; scan {times[False]:.1f} s, with the square "
              f"{times[True]:.1f} s (+{times[True] - times[False]:.1f} s)")


if __name__ == "__main__":
    main()
