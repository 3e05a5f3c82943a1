"""Fuzzing (hypothesis): readers and the config loader end in one-line NeurodiffErrors, never a hang or another
exception, and the CLI answers a corrupt input with exit code 2 and one line."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurodiff import config
from neurodiff.cli import main
from neurodiff.data import io
from neurodiff.errors import NeurodiffError

FUZZ = settings(max_examples=40, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
FORMATS = ["a.png", "a.tif", "a.nii", "a.nii.gz", "a.npy", "a.npz"]


def _valid_bytes(tmp_path, name: str) -> bytes:
    p = tmp_path / f"valid_{name}"
    x = (np.arange(2 * 12 * 10) % 251).astype(np.uint8).reshape(1, 2, 12, 10) if name != "a.png" else \
        (np.arange(12 * 10) % 251).astype(np.uint8).reshape(1, 12, 10)
    io.write(p, x)
    return p.read_bytes()


def _read_ok_or_one_line_error(path) -> None:
    try:
        x, meta = io.read(path)
    except NeurodiffError as e:
        msg = str(e)
        assert "\n" not in msg and path.name in msg, msg
        return
    assert x.dtype.kind in "biuf" and x.ndim in (3, 4) and x.size > 0


@pytest.mark.parametrize("name", FORMATS)
@FUZZ
@given(data=st.data())
def test_corrupted_files_read_or_fail_in_one_line(tmp_path, name, data):
    raw = bytearray(_valid_bytes(tmp_path, name))
    kind = data.draw(st.sampled_from(["truncate", "flip", "garbage", "splice"]))
    if kind == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    elif kind == "garbage":
        raw = bytearray(data.draw(st.binary(min_size=0, max_size=600)))
    else:                                        # the header kept, the rest replaced
        raw = raw[:data.draw(st.integers(0, min(400, len(raw))))] + data.draw(st.binary(max_size=300))
    path = tmp_path / name
    path.write_bytes(bytes(raw))
    _read_ok_or_one_line_error(path)


def _nifti_header(dims, datatype=2, bitpix=8) -> bytes:
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    struct.pack_into("<hh", h, 70, datatype, bitpix)
    struct.pack_into("<8f", h, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", h, 108, 352.0)
    h[344:348] = b"n+1\0"
    return bytes(h) + b"\0" * 4


@FUZZ
@given(dims=st.lists(st.integers(-5, 32767), min_size=1, max_size=7),
       datatype=st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 255, 2304, 9999]))
def test_absurd_nifti_headers_fail_fast(tmp_path, dims, datatype):
    path = tmp_path / "h.nii.gz"
    path.write_bytes(gzip.compress(_nifti_header(dims, datatype) + b"\1" * 64))
    _read_ok_or_one_line_error(path)


def test_absurd_image_sizes_are_refused_before_decoding(tmp_path):
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 200_000, 200_000, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    (tmp_path / "big.png").write_bytes(png)
    with pytest.raises(NeurodiffError, match="big.png"):
        io.read(tmp_path / "big.png")
    path = tmp_path / "big.nii"
    path.write_bytes(_nifti_header([3, 30000, 30000, 30000]) + b"\0" * 100)
    with pytest.raises(NeurodiffError, match="big.nii"):
        io.read(path)
    # under MAX_VOXELS but far more than the file holds: refused from the header, before a 6 GB buffer is allocated
    for name, body in (("short.nii", _nifti_header([75, 219, 437, 898])),
                       ("short.nii.gz", gzip.compress(_nifti_header([75, 219, 437, 898]) + b"\1" * 64))):
        (tmp_path / name).write_bytes(body)
        with pytest.raises(NeurodiffError, match=f"{name}: truncated NIfTI: header says shape"):
            io.read(tmp_path / name)


@pytest.mark.parametrize("array", [np.zeros((2, 3, 4), complex), np.array([[["a"]]]), np.zeros((0, 4, 4)),
                                   np.zeros((1, 2, 3, 4, 5, 6)), np.zeros((2, 3, 4), dtype=[("a", "f4")])],
                         ids=["complex", "strings", "empty", "6d", "structured"])
def test_wrong_dtypes_and_ranks_are_one_line_errors(tmp_path, array):
    path = tmp_path / "w.npy"
    np.save(path, array)
    with pytest.raises(NeurodiffError) as e:
        io.read(path)
    assert "\n" not in str(e.value) and "w.npy" in str(e.value)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "o.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(NeurodiffError, match="o.npy"):
        io.read(path)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                     st.text(max_size=8), st.lists(st.integers(-3, 300), max_size=4))
_KNOWN = [f"{s}.{f}" for s, cls in (("data", config.DataConfig), ("model", config.ModelConfig),
                                    ("diffusion", config.DiffusionConfig), ("train", config.TrainConfig),
                                    ("sample", config.SampleConfig), ("autoencoder", config.AutoencoderConfig))
          for f in cls.__dataclass_fields__ if f != "meta"]


@settings(max_examples=300, deadline=2000)
@given(st.dictionaries(st.sampled_from(_KNOWN + ["data.nope", "bogus.x", "train"]), _scalars, max_size=5))
def test_config_loader_accepts_or_names_the_field(items):
    raw: dict = {}
    for key, value in items.items():
        section, _, field = key.partition(".")
        if field:
            if not isinstance(raw.get(section, {}), dict):
                continue
            raw.setdefault(section, {})[field] = value
        else:
            raw[section] = value
    try:
        cfg = config.from_dict(raw)
    except NeurodiffError as e:
        assert "\n" not in str(e) and ("config field" in str(e) or "unknown config field" in str(e)), str(e)
        return
    assert config.from_dict(config.to_dict(cfg)) == cfg      # whatever is accepted round-trips


@FUZZ
@given(text=st.text(max_size=200))
def test_config_files_of_any_text_load_or_fail_in_one_line(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    try:
        config.load(path)
    except NeurodiffError as e:
        assert "\n" not in str(e)


def test_cli_answers_a_corrupt_image_and_a_bad_config_with_one_line(tmp_path, capsys):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (tmp_path / "d").mkdir()
    bad.rename(tmp_path / "d" / "x.png")
    assert main(["train", "tiny", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "x.png" in err and "Traceback" not in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {lr: fast}\n")
    assert main(["train", str(cfg), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.lr" in err
