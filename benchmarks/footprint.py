"""Installed size of what the rnnedge runtime needs (numpy + onnxruntime and their closure).

Walks the installed distributions' metadata from `rnnedge[cpu]`'s runtime requirements,
follows each requirement without extras, and sums the sizes of the files each distribution
installed. Compared against the export-side packages (torch, onnx, onnxscript) that an
embedding app does not need.

    python benchmarks/footprint.py [--json-out benchmarks/results/<date>-footprint.json]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import json
import platform
import re
from pathlib import Path

RUNTIME_ROOTS = ("numpy", "onnxruntime")
EXPORT_ROOTS = ("torch", "onnx", "onnxscript")


def _name(req: str) -> str | None:
    """The distribution a requirement line names, or None when it is extra-only."""
    if ";" in req and "extra ==" in req.split(";", 1)[1]:
        return None
    match = re.match(r"[A-Za-z0-9_.\-]+", req)
    return match.group(0) if match else None


def closure(roots: tuple[str, ...]) -> list[str]:
    seen: dict[str, None] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        seen[key] = None
        todo += [n for n in (_name(r) for r in reqs) if n]
    return list(seen)


def size_of(dist_name: str) -> int:
    dist = md.distribution(dist_name)
    total = 0
    for f in dist.files or []:
        path = Path(str(dist.locate_file(f)))
        if path.is_file():
            total += path.stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", help="write the figures as JSON here")
    args = parser.parse_args()
    result: dict[str, object] = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "groups": {},
    }
    for label, roots in (
        ("runtime (rnnedge[cpu])", RUNTIME_ROOTS),
        ("export side (not needed to run)", EXPORT_ROOTS),
    ):
        sizes = {n: size_of(n) for n in closure(roots)}
        result["groups"][label] = {
            "packages": {n: {"version": md.version(n), "bytes": b} for n, b in sizes.items()},
            "total_bytes": sum(sizes.values()),
        }
        print(f"{label}: {sum(sizes.values()) / 2**20:.1f} MiB")
        for n, b in sorted(sizes.items(), key=lambda kv: -kv[1]):
            print(f"  {n:<22} {md.version(n):<14} {b / 2**20:8.1f} MiB")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
