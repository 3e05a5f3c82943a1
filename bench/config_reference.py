"""Regenerate the README's configuration reference from src/neurodiff/config.py (fields, defaults, comments).

    python bench/config_reference.py            # rewrite README.md's tables in place
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path

from neurodiff import config as C

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = [("data.normalizer", C.NormalizerConfig), ("data", C.DataConfig), ("model", C.ModelConfig),
            ("diffusion.vp", C.VPConfig), ("diffusion", C.DiffusionConfig), ("train", C.TrainConfig),
            ("sample", C.SampleConfig), ("autoencoder", C.AutoencoderConfig), ("top level", C.RunConfig)]


def comments(cls) -> dict[str, str]:
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+):[^#]*?(?:#\s*(.*))?$", line)
        if m:
            out[m.group(1)] = (m.group(2) or "").strip()
    return out


def default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def tables() -> str:
    parts = []
    for title, cls in SECTIONS:
        notes = comments(cls)
        rows = []
        for f in dataclasses.fields(cls):
            value = default(f)
            if dataclasses.is_dataclass(value):
                continue
            shown = json.dumps(value) if isinstance(value, (str, list, dict)) else repr(value)
            rows.append(f"| `{f.name}` | `{shown}` | {notes.get(f.name, '').replace('|', '/')} |")
        head = title if " " in title else f"`{title}`"
        parts.append(f"**{head}**\n\n| field | default | meaning |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start = text.index("**`data.normalizer`**")
    end = text.index("## Benchmarks and measurements")
    readme.write_text(text[:start] + tables() + "\n" + text[end:])


if __name__ == "__main__":
    main()
