"""Shared fixtures: small real data (slices and crops of the MNI152 template that nilearn ships)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurodiff.data import io


@pytest.fixture(scope="session")
def mni() -> np.ndarray:
    """The MNI152 2009 T1 template, uint8 [197, 233, 189]."""
    from neurodiff.demo import mni_template_path

    x, _ = io.read(mni_template_path())
    return x[0]


@pytest.fixture(scope="session")
def slice_folder(tmp_path_factory, mni) -> Path:
    """8 axial slices as 32x32 uint8 PNGs, in two class sub-folders (low / high)."""
    root = tmp_path_factory.mktemp("slices")
    for i, z in enumerate(range(50, 130, 10)):
        sl = mni[18:178:5, 20:212:6, z][:32, :32]
        cls = "low" if z < 90 else "high"
        io.write(root / cls / f"slice_{z:03d}.png", np.ascontiguousarray(sl)[None])
    return root


@pytest.fixture(scope="session")
def volume_folder(tmp_path_factory, mni) -> Path:
    """8 uint8 NIfTI volumes of 16^3 (6 mm block means of the template) with a 6 mm affine."""
    root = tmp_path_factory.mktemp("volumes")
    for i in range(8):
        ox, oy, oz = 20 + 8 * i, 30 + 6 * i, 30 + 5 * i
        block = mni[ox:ox + 96, oy:oy + 96, oz:oz + 96].astype(np.float32)
        v = np.rint(block.reshape(16, 6, 16, 6, 16, 6).mean((1, 3, 5))).astype(np.uint8)
        meta = io.ImageMeta(format="nifti", dtype="uint8", spacing=(6.0, 6.0, 6.0),
                            affine=np.diag([6.0, 6.0, 6.0, 1.0]).tolist())
        io.write(root / f"vol_{i}.nii.gz", np.ascontiguousarray(v)[None], meta)
    return root


@pytest.fixture
def model_loads(monkeypatch):
    """The devices models are loaded on, with ``dist.init`` (the GPU when there is one) saying ``cpu:0``: a CPU
    device that differs from the plain ``"cpu"`` default, so a command that ignores dist.init shows up."""
    import torch

    import neurodiff.dist
    import neurodiff.train.state as state

    seen, real = [], state.load_model
    monkeypatch.setattr(neurodiff.dist, "init", lambda: torch.device("cpu", 0))
    monkeypatch.setattr(state, "load_model", lambda path, device="cpu": seen.append(device) or real(path, device))
    return seen
