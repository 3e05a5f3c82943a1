"""DESIGN.md's one-way imports: config, dist (and precision, the bf16 helpers beside dist) -> nn, data/io ->
diffusion, codec, tiling -> tasks -> data/datasets -> train -> metrics -> cli. diffusion/ does not import nn/;
data/io does not import torch."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "neurodiff"
TIERS = [
    {"errors", "config", "dist", "precision"},
    {"nn", "data.io", "data.png16", "data.normalize", "data.zarrio", "data.temps", "data.tiffio"},
    {"diffusion", "codec", "tiling"},
    {"tasks"},
    {"data.datasets", "data.latents"},
    {"train"},
    {"metrics"},
    {"cli", "cli_latent", "demo"},
]


def tier(module: str) -> int:
    parts = module.split(".")
    for i, names in enumerate(TIERS):
        if ".".join(parts[:2]) in names or parts[0] in names:
            return i
    raise AssertionError(f"module {module} is not placed in a tier")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("neurodiff."):
            found.add(node.module[len("neurodiff."):])
            for alias in node.names:  # "from neurodiff.data import io"
                found.add(f"{node.module[len('neurodiff.'):]}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name[len("neurodiff."):] for a in node.names if a.name.startswith("neurodiff.")}
    return found


def test_imports_point_one_way():
    bad = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        if rel.name == "__init__":
            continue
        me = ".".join(rel.parts)
        for other in imports(path):
            try:
                t = tier(other)
            except AssertionError:
                continue  # "from neurodiff.data import io" also yields "data" (a package)
            if t > tier(me):
                bad.append(f"{me} imports {other}")
    assert not bad, bad


def test_diffusion_does_not_import_nn_and_io_does_not_import_torch():
    for path in (SRC / "diffusion").rglob("*.py"):
        assert not any(m.startswith("nn") for m in imports(path)), path
    tree = ast.parse((SRC / "data" / "io.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names} | \
        {n.module for n in top if isinstance(n, ast.ImportFrom)}
    assert "torch" not in names


def test_modules_stay_small():
    big = [(p.name, n) for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450]
    assert not big, big


def test_benchmark_peers_are_never_imported_by_the_package():
    """MONAI and diffusers are benchmark/test extras only: nothing under src/ may import them."""
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in {"monai", "diffusers", "einops"}, f"{path} imports {name}"
