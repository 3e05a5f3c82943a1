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


class SquareScan:
    """How large a tile must be so that none lies wholly in a mask read band by band, the rows of each plane (the
    last two axes) in order: ``side`` is, over the planes, the side of the largest square of fill pixels, or, where
    such a square spans the plane's short axis (a tile larger than that axis is cut to it), the length of the longest
    strip of fill across that axis; a tile larger than ``side`` cannot lie wholly in the mask (in 3D one plane's
    figure: a bound, as a tile must be all fill in every plane it holds). Per row, the run of fill pixels ending
    there in each column; the largest square grows by at most one per row, so one size is tried."""

    def __init__(self):
        self._done, self._p = 0, None

    def rows(self, band: np.ndarray, first: bool) -> None:
        """``band`` [R, W]: the next rows of a plane (``first``: the plane's first rows)."""
        if first or self._p is None:
            self._done = self.side
            self._p = {"runs": np.zeros(band.shape[-1], np.int64), "square": 0, "height": 0, "full": 0, "strip": 0}
        p = self._p
        for row in np.asarray(band, bool):
            p["runs"] = runs = np.where(row, p["runs"] + 1, 0)
            p["height"] += 1
            p["full"] = p["full"] + 1 if row.all() else 0           # rows of fill side by side, across the plane
            p["strip"] = max(p["strip"], p["full"])
            s = p["square"] + 1
            if runs.max(initial=0) >= s:
                tall = np.concatenate(([0], np.cumsum(runs >= s)))
                if (tall[s:] - tall[:-s]).max(initial=0) >= s:       # s columns side by side, each s rows of fill
                    p["square"] = s

    @property
    def side(self) -> int:
        p = self._p
        if p is None:
            return self._done
        height, width = p["height"], len(p["runs"])
        if p["square"] < min(height, width):
            return max(self._done, p["square"])
        if height > width:                        # the square spans the rows: the longest strip of full rows
            return max(self._done, p["strip"])
        edges = np.flatnonzero(p["runs"] < height)
        gaps = np.diff(np.concatenate(([-1], edges, [width]))) - 1
        return max(self._done, int(gaps.max()))


def square_side(mask: np.ndarray) -> int:
    """``SquareScan.side`` of a bool mask [*S]; a ``RegionMask`` is read whole."""
    mask = mask[tuple(slice(0, n) for n in mask.shape)] if isinstance(mask, RegionMask) else mask
    scan = SquareScan()
    for plane in np.asarray(mask, bool).reshape(-1, *mask.shape[-2:]):
        scan.rows(plane, True)
    return scan.side


def auto_tile(train_px: int, factor: int, side: int, dims: int) -> int:
    """``--tile auto``: the least tile, a multiple of ``factor`` and at least the training size ``train_px``, that
    is larger than ``side`` (``SquareScan``), so that no tile lies wholly in the mask; at most 4x the training size
    in 2D (16x the pixels), 2x in 3D (8x the voxels)."""
    cap = train_px * (4 if dims == 2 else 2) // factor * factor
    return min(max(train_px, -(-(side + 1) // factor) * factor), max(cap, train_px))
