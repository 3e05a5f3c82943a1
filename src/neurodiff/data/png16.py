"""A minimal 16-bit colour PNG codec (Pillow reads 16-bit RGB PNG only as 8-bit): numpy + zlib, no torch."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from neurodiff.errors import NeurodiffError

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def decode(data: bytes, path, check_voxels) -> np.ndarray:
    """Decode a 16-bit colour PNG (Pillow would drop the low byte) -> [C,H,W] uint16."""
    pos, idat, ihdr = 8, [], None
    while pos + 8 <= len(data):
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if len(body) != n:
            raise ValueError(f"chunk {tag!r} cut short")
        if tag == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"IEND":
            break
        pos += 12 + n
    w, h, _, color, _, _, interlace = ihdr
    if interlace:
        raise NeurodiffError(f"{path}: interlaced 16-bit colour PNG is not supported; re-save it without interlacing")
    ch = {2: 3, 4: 2, 6: 4}[color]
    check_voxels(path, (ch, h, w))
    bpp, need = 2 * ch, h * (w * 2 * ch + 1)
    raw = zlib.decompressobj().decompress(b"".join(idat), need + 1)  # bounded: no zip bomb
    if len(raw) != need:
        raise ValueError(f"expected {need} bytes of pixel data, found {len(raw)}")
    rows = np.frombuffer(raw, np.uint8).reshape(h, w * bpp + 1)
    ftype, d = rows[:, 0], rows[:, 1:].reshape(h, w, bpp).astype(np.int16)
    if ftype.max() > 4:
        raise ValueError(f"unknown PNG filter type {ftype.max()}")
    if not ftype.any():
        out = d
    else:
        # Sub/Average/Paeth depend on the decoded left pixel: sweep anti-diagonals so each
        # step is vectorised over rows (left, up and up-left are always done already).
        out = np.zeros((h + 1, w + 1, bpp), np.int16)
        ys = np.arange(h)
        for t in range(w + h - 1):
            y = ys[max(0, t - w + 1):min(h, t + 1)]
            x = t - y
            a, b, c = out[y + 1, x], out[y, x + 1], out[y, x]
            p = a + b - c
            pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
            paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
            pred = np.choose(ftype[y][:, None], [np.zeros_like(a), a, b, (a + b) >> 1, paeth])
            out[y + 1, x + 1] = (d[y, x] + pred) & 0xFF
        out = out[1:, 1:]
    px = out.astype(np.uint8).reshape(h, w * bpp).view(">u2").reshape(h, w, ch).astype(np.uint16)
    px = px[..., :1] if ch == 2 else px[..., :3]  # drop alpha
    return np.moveaxis(px, -1, 0)


def encode(x: np.ndarray) -> bytes:
    """Minimal 16-bit RGB PNG (filter 0, zlib) from [3,H,W] uint16."""
    _, h, w = x.shape
    rows = np.zeros((h, 1 + 6 * w), np.uint8)
    rows[:, 1:] = np.moveaxis(x, 0, -1).astype(">u2", order="C").view(np.uint8).reshape(h, -1)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    return (PNG_SIG + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))
