"""Temporary files of atomic writes (``.NAME.tmpPID...``, renamed into place when whole) left by killed runs."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from neurodiff.errors import NeurodiffError

# .NAME.tmp-PID, .NAME.tmpPID (zarr folders), .STEM.tmpPID-N.SUFFIX (io.write), .STEM.tmpPID.SUFFIX (tiffio)
_TMP_NAME = re.compile(r"^\..+\.tmp-?(\d+)(-\d+)?(\.[A-Za-z0-9]+(\.gz)?)?$")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a hidden ``.NAME.tmp-PID`` beside it, renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` whole or not at all: a hidden ``.NAME.tmp-PID`` beside it, synced and renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        import torch      # here: data/io imports this module and must not import torch

        torch.save(obj, tmp)
        _fsync_replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise NeurodiffError(f"{path}: cannot write checkpoint ({e.strerror or e}); the previous one is kept") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | Path) -> int:
    """Delete the hidden temporary files and zarr folders (``.NAME.tmpPID...``) that a killed process left in
    ``folder``: those whose process is gone. The finished files next to them are whole (written by rename). Returns the count."""
    n = 0
    folder = Path(folder)
    for f in folder.glob(".*.tmp*") if folder.is_dir() else ():
        m = _TMP_NAME.match(f.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue                       # its writer is still running
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        if f.is_dir() and not f.is_symlink():    # a zarr image's folder (data/zarrio.py)
            shutil.rmtree(f, ignore_errors=True)
        else:
            f.unlink(missing_ok=True)
        n += 1
    return n
