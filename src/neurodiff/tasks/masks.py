"""Inpainting masks: the mask convention (non-zero = fill), ``--box`` boxes, and masks read region by region for
images larger than memory."""

from __future__ import annotations

import numpy as np

from neurodiff.errors import NeurodiffError


def box_bounds(boxes: list[str], spatial: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """``["y0:y1,x0:x1", ...]`` (or z0:z1,y0:y1,x0:x1 in 3D) -> the boxes as slices, checked against ``spatial``."""
    out = []
    for text in boxes:
        parts = text.split(",")
        try:
            bounds = [tuple(int(v) for v in p.split(":")) for p in parts]
        except ValueError:
            bounds = []
        if len(parts) != len(spatial) or any(len(b) != 2 or not 0 <= b[0] < b[1] <= n
                                             for b, n in zip(bounds, spatial)):
            axes = ",".join(["z0:z1", "y0:y1", "x0:x1"][-len(spatial):])
            raise NeurodiffError(f"--box {text!r}: expected {axes} inside the image {list(spatial)}")
        out.append(tuple(slice(a, b) for a, b in bounds))
    return out


def parse_boxes(boxes: list[str], spatial: tuple[int, ...]) -> np.ndarray:
    """``["y0:y1,x0:x1", ...]`` (or z0:z1,y0:y1,x0:x1 in 3D) -> bool mask of ``spatial`` (True = fill)."""
    mask = np.zeros(spatial, dtype=bool)
    for box in box_bounds(boxes, spatial):
        mask[box] = True
    return mask


class RegionMask:
    """A mask read region by region, for images larger than memory: the non-zero pixels (any channel) of a lazy
    mask image ``[C, *S]`` and/or boxes (slices). ``mask[region]`` -> bool array of the region; ``shape``."""

    def __init__(self, spatial: tuple[int, ...], image=None, boxes: list[tuple[slice, ...]] = ()):
        self.shape, self.image, self.boxes, self.ndim = tuple(spatial), image, list(boxes), len(spatial)

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        region = tuple(slice(*r.indices(n)[:2]) for r, n in zip(region, self.shape))
        if self.image is not None:
            m = (np.asarray(self.image[(slice(None), *region)]) != 0).any(0)
        else:
            m = np.zeros([r.stop - r.start for r in region], bool)
        for box in self.boxes:
            inter = [slice(max(b.start, r.start) - r.start, min(b.stop, r.stop) - r.start) for b, r in zip(box, region)]
            if all(i.stop > i.start for i in inter):
                m[tuple(inter)] = True
        return m
