"""The network's numeric precision: bf16 autocast where bf16 is native (GPUs, AVX-512 BF16 / AMX CPUs), exact
float32 elsewhere. bf16 only buys speed; on a CPU that emulates it (AVX2 only) it costs speed instead, so there
an explicit bf16 falls back to float32 with a one-line warning, for training and for sampling alike."""

from __future__ import annotations

import torch

from neurodiff import dist
from neurodiff.errors import NeurodiffError

PRECISIONS = ("auto", "fp32", "bf16")
_warned: set[str] = set()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 / AMX); elsewhere bf16 autocast is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device, what: str = "--precision") -> str:
    """``precision`` checked (``what`` names the option in errors) and made usable on ``device``: bf16 on a CPU
    without native bf16 becomes fp32, with a warning printed once per process and option."""
    if precision not in PRECISIONS:
        raise NeurodiffError(f"{what}: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and torch.device(device).type == "cpu" and not cpu_has_bf16():
        if what not in _warned:
            _warned.add(what)
            # measured: convolutions 60x slower on an AVX2 EPYC (training), see README "Precision"
            dist.print0(f"warning: {what}=bf16 but this CPU ({torch.backends.cpu.get_cpu_capability()}) has no "
                        "native bf16 (emulated it is 10-60x slower than fp32); using fp32")
        return "fp32"
    return precision


def autocast(precision: str, device):
    """The autocast context of a resolved precision: auto = bf16 on GPUs, float32 elsewhere."""
    kind = torch.device(device).type
    use_bf16 = precision == "bf16" or (precision == "auto" and kind == "cuda")
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=use_bf16)
