"""A long repaint that can stop and go on. Every ``EVERY_S`` seconds, and when it ends, its state -- the schedule
step reached, the current x and the noise generators' states -- is written (atomically) into a folder, one file per
key: a digest of everything that decides the result (the model's weights and config, the known pixels, the mask,
the seeds, the schedule, the noise levels, eta, the precision and the device). A later run with the same key
continues from its file and gives the uninterrupted run's result; files of other keys are left alone. The caller
clears the folder once it has kept the results (``clear``). At 2410 network calls one repaint (or one batch of
them) takes minutes on a GPU and far longer on a CPU: a cut-off run no longer loses it."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from neurodiff.data.temps import atomic_torch_save

EVERY_S = 60.0     # seconds between two saves of a running repaint


def model_key(model) -> str:
    """A digest of the model: its weights' (``model.digest``, else computed from ``model.net``) and its config."""
    digest = getattr(model, "digest", "") or state_key(*model.net.state_dict().values())
    return state_key(str(digest), repr(getattr(model, "cfg", None)))


def device_key(device, precision: str) -> str:
    """What the numbers of a run on ``device`` at ``precision`` depend on beyond the inputs: the device's kind and
    model (a GPU's name; a CPU's vector unit and native bf16) and the precision it resolves to there."""
    from neurodiff.precision import cpu_has_bf16, resolve_precision

    device = torch.device(device)
    if device.type == "cuda":
        kind = torch.cuda.get_device_name(device)
    else:
        kind = f"{getattr(torch.backends.cpu, 'get_cpu_capability', lambda: '')()}:bf16={cpu_has_bf16()}"
    return f"{device.type}:{kind}:{resolve_precision(precision, device)}"


def run_key(model, device, precision: str, codec=None) -> str:
    """The part of a repaint's key that a whole run shares: the model (and a latent model's codec), the device and
    the precision."""
    return state_key(model_key(model), str(getattr(codec, "digest", "")), device_key(device, precision))


def clear(folder) -> None:
    """Delete the saved states in ``folder`` (the results they led to are kept)."""
    shutil.rmtree(folder, ignore_errors=True)


def state_key(*parts) -> str:
    """sha1 over ``parts``: tensors and arrays by dtype, shape and bytes, anything else by its JSON (or repr)."""
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, torch.Tensor):
            p = p.detach().cpu().contiguous()
            h.update(f"{p.dtype}{tuple(p.shape)}".encode())
            h.update(p.view(torch.uint8).numpy().tobytes() if p.numel() else b"")
        elif isinstance(p, np.ndarray):
            h.update(f"{p.dtype}{p.shape}".encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, default=repr).encode())
        h.update(b"|")
    return h.hexdigest()


class RepaintState:
    """The saved state of one repaint (or one batch of repaints) keyed ``key``, in the folder ``folder``."""

    def __init__(self, folder, key: str):
        self.path, self.key = Path(folder) / f"{key}.pt", key
        self.resumed_at: int | None = None    # the schedule step a stopped run had reached, when continued
        self.seconds_before = 0.0             # what the stopped run had spent on it
        self._t0 = self._last = time.monotonic()

    def load(self, generators: list) -> tuple[int, torch.Tensor] | None:
        """``(step, x)`` of a stopped run with this key, the generators set to their states then; else None."""
        try:
            st = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:           # no file, or not one of ours: start from the beginning
            return None
        if not isinstance(st, dict) or st.get("key") != self.key or len(st.get("generators", ())) != len(generators):
            return None
        for g, s in zip(generators, st["generators"]):
            g.set_state(s)
        self.resumed_at, self.seconds_before = int(st["step"]), float(st["seconds"])
        self._t0 = self._last = time.monotonic()
        return self.resumed_at, st["x"]

    def saver(self, generators: list, last: int | None = None):
        """A ``repaint`` callback that saves the state when ``EVERY_S`` seconds have passed since the last save,
        and at step ``last`` (the schedule's final step: the finished repaint, until the caller has kept it)."""
        def callback(step: int, x: torch.Tensor) -> None:
            if step == last or time.monotonic() - self._last >= EVERY_S:
                self.save(step, x, generators, final=step == last)
        return callback

    def save(self, step: int, x: torch.Tensor, generators: list, final: bool = False) -> None:
        """``final``: the finished repaint, whose result ``repaint`` returns as float32: stored at that precision
        (half the disk), it gives the same result."""
        x = x.detach().cpu()
        state = {"key": self.key, "step": int(step), "x": x.float() if final else x,
                 "generators": [g.get_state() for g in generators],
                 "seconds": self.seconds_before + time.monotonic() - self._t0}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(state, self.path)
        self._last = time.monotonic()

    def finish(self) -> None:
        """The repaint's result is kept: its saved state is no longer needed."""
        self.path.unlink(missing_ok=True)


def keep_region(folder, name: str, values: np.ndarray) -> None:
    """Save ``values`` (a tile's region of the output as it read it) as ``folder/NAME.pt``, whole or not at all."""
    v = np.ascontiguousarray(values)
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"dtype": v.dtype.str, "shape": list(v.shape),
                       "bytes": torch.from_numpy(v.reshape(-1).view(np.uint8).copy())}, Path(folder) / f"{name}.pt")


def kept_region(folder, name: str) -> np.ndarray | None:
    """What ``keep_region`` saved as NAME in ``folder``, or None."""
    try:
        st = torch.load(Path(folder) / f"{name}.pt", map_location="cpu", weights_only=True)
        return np.frombuffer(st["bytes"].numpy().tobytes(), np.dtype(st["dtype"])).reshape(st["shape"])
    except Exception:               # no file, or not one of ours
        return None


def drop_region(folder, name: str) -> None:
    """Delete what ``keep_region`` saved as NAME in ``folder`` (if anything)."""
    (Path(folder) / f"{name}.pt").unlink(missing_ok=True)
