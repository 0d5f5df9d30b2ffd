"""What a case did to the files around it: nothing destroyed, nothing left behind.

A snapshot hashes every file under the case folder (links recorded, not followed); comparing
the snapshots before and after a case finds files that were removed or changed and new ones that
are not an expected output of a success (temporary files never are).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.hostile.artifacts import sha256


@dataclass
class Problem:
    """One thing that escaped a case."""

    label: str  # one of harness.ESCAPES
    text: str  # what escaped, for the failure message
    signature: str  # what to fix, the same for every case the same fix cures


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> content hash (files), 'dir', or 'link:target'; links not followed."""
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            elif path.is_file():
                try:
                    found[rel] = sha256(path)
                except OSError as exc:
                    found[rel] = f"unreadable:{exc.errno}"
            else:
                found[rel] = "special"
    return found


def _under(rel: str, work: Path, outputs: tuple[Path, ...]) -> bool:
    path = (work / rel).absolute()
    for out in outputs:
        out = out if out.is_absolute() else (work / out)
        out = Path(os.path.normpath(out))
        if path == out or out in path.parents or path in out.parents:
            return True
    return False


def file_problems(
    before: dict[str, str],
    after: dict[str, str],
    work: Path,
    succeeded: bool,
    outputs: tuple[Path, ...],
    replace: bool,
    inputs: tuple[Path, ...] = (),
) -> list[Problem]:
    problems = []
    for rel, digest in before.items():
        may_change = (
            succeeded
            and replace
            and _under(rel, work, outputs)
            and not any(
                (work / rel).absolute()
                == Path(os.path.normpath(i if i.is_absolute() else work / i))
                for i in inputs
            )
        )
        if rel not in after:
            problems.append(Problem("destroyed", f"'{rel}' was removed", "a file was removed"))
        elif after[rel] != digest and not may_change and digest != "dir":
            problems.append(
                Problem("destroyed", f"'{rel}' was changed", "an existing file was overwritten")
            )
    for rel in sorted(set(after) - set(before)):
        tmp = rel.endswith(".tmp") or Path(rel).name.startswith(".")
        if tmp or not (succeeded and _under(rel, work, outputs)):
            why = (
                "a temporary file"
                if tmp
                else ("after a refusal" if not succeeded else "not an expected output")
            )
            problems.append(
                Problem(
                    "left behind",
                    f"'{short_rel(rel)}' left behind ({why})",
                    f"{why.split(' (')[0]} left behind",
                )
            )
    return problems


def short_rel(rel: str) -> str:
    return rel if len(rel) <= 70 else rel[:40] + "…" + rel[-20:]
