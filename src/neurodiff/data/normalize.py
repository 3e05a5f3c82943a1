"""Named, invertible intensity normalisers (numpy or torch arrays); constants are stored with the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodiff.errors import NeurodiffError

INT_RANGES = {d: (np.iinfo(d).min, np.iinfo(d).max)
              for d in ("uint8", "uint16", "int8", "int16", "int32", "uint32")}


@dataclass(frozen=True)
class Normalizer:
    """Affine map [lo, hi] -> [-1, 1]. 'percentile' clips outside [lo, hi]; 'minmax' and 'range' don't need to."""

    kind: str
    lo: float
    hi: float

    def normalize(self, x):
        """Input units -> float32 in [-1, 1] (values outside [lo, hi] are clipped for 'percentile')."""
        x = x.astype(np.float32) if isinstance(x, np.ndarray) else x.float()
        if self.kind == "percentile":
            x = x.clip(self.lo, self.hi)
        return (x - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0

    def denormalize(self, y, dtype: str = "float32") -> np.ndarray:
        """[-1, 1] -> input units as ``dtype`` (numpy; rounded and clipped for integer dtypes)."""
        y = np.asarray(y.detach().cpu() if hasattr(y, "detach") else y, dtype=np.float64).clip(-1.0, 1.0)
        x = self.lo + (y + 1.0) * 0.5 * (self.hi - self.lo)
        if np.issubdtype(np.dtype(dtype), np.integer):      # any integer type, 64-bit included
            info = np.iinfo(dtype)
            hi = float(info.max) if int(float(info.max)) <= info.max else np.nextafter(float(info.max), 0.0)
            return np.rint(x).clip(float(info.min), hi).astype(dtype)
        return x.astype(dtype)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "lo": self.lo, "hi": self.hi}


def fit_normalizer(cfg, arrays, dtype: str) -> Normalizer:
    """Fit lo/hi on an iterable of numpy arrays (skipped where the config already fixes them)."""
    if cfg.lo is not None and cfg.hi is not None:
        lo, hi = float(cfg.lo), float(cfg.hi)
    elif cfg.kind == "range":
        if dtype not in INT_RANGES:
            raise NeurodiffError(f"data.normalizer: kind 'range' needs lo/hi for {dtype} data")
        lo, hi = map(float, INT_RANGES[dtype])
    elif cfg.kind == "minmax":
        lo, hi = np.inf, -np.inf
        for a in arrays:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    else:  # percentile on a fixed-seed subsample of every array
        rng = np.random.default_rng(0)
        pool = []
        for a in arrays:
            flat = a.reshape(-1)
            pool.append(flat if flat.size <= 200_000 else flat[rng.integers(0, flat.size, 200_000)])
        lo, hi = (float(v) for v in np.percentile(np.concatenate(pool).astype(np.float64), cfg.percentiles))
    if not np.isfinite([lo, hi]).all():
        raise NeurodiffError(f"data.normalizer: intensity range [{lo}, {hi}] is not finite (NaN or Inf in the data?)")
    if hi <= lo:
        raise NeurodiffError(f"data.normalizer: the data have no intensity range (lo={lo}, hi={hi}); "
                             "are all images constant?")
    return Normalizer(cfg.kind, lo, hi)
