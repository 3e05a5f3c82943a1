"""Peak memory of streaming a very wide RGB image from neurodiff's tile store (zarr, 512x512 chunks) into a TIFF
(tiffio.write_from, what `neurodiff inpaint --out X.tif` does last for a tiled image).

    python bench/tiff_write_memory.py [OUT] [--width 131072] [--height 1024]

Makes OUT/src.zarr (3 x height x width uint8, a deterministic pattern) once, then writes OUT/out.tif in a fresh
process and prints its time, peak resident memory and the output's MD5. One row of 512-row chunks of a
131072-wide RGB image is 192 MiB, three times write_from's 64 MiB band.
"""
import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np

WRITE = """
import resource, sys, time, zarr
from neurodiff.data import io, tiffio
src = zarr.open_array(sys.argv[1], mode="r")
t = time.perf_counter()
tiffio.write_from(sys.argv[2], src, io.ImageMeta("tiff", "uint8"))
print(f"{tuple(src.shape)} chunks {tuple(src.chunks)}: {time.perf_counter() - t:.1f} s, "
      f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path, default=Path("/tmp/tiff_write_memory"))
    ap.add_argument("--width", type=int, default=131072)
    ap.add_argument("--height", type=int, default=1024)
    args = ap.parse_args()
    from neurodiff.data import zarrio
    src = args.out / "src.zarr"
    if not src.exists():
        z = zarrio.create(src, (3, args.height, args.width), np.uint8)
        rows = np.arange(args.height)[None, :, None] * 3 + np.arange(3)[:, None, None]
        for x0 in range(0, args.width, 8192):
            cols = np.arange(x0, min(args.width, x0 + 8192))[None, None] * 7
            z[:, :, x0:x0 + cols.shape[-1]] = ((cols + rows) % 251).astype(np.uint8)
        zarrio.commit(src)
    subprocess.run([sys.executable, "-c", WRITE, str(src), str(args.out / "out.tif")], check=True)
    md5 = hashlib.md5()
    with open(args.out / "out.tif", "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            md5.update(block)
    print(f"{args.out / 'out.tif'}: md5 {md5.hexdigest()}")


if __name__ == "__main__":
    main()
