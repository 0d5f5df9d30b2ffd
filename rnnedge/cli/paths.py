"""Checks on what a command will write, made before any work starts.

A command that trains for a minute and then cannot write its result has wasted the minute, and
one that writes over its own input has destroyed it. So every output path is checked while the
command line is read: the suffix names a format the command writes, the place is a folder this
process can create files in, the name fits the filesystem, it is none of the command's inputs
(not even with `--force`, not through a link), and an existing file is replaced only with
`--force`. Each refusal is a `UsageError`: exit 2 and one line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from rnnedge.cli.common import UsageError

PathLike = str | os.PathLike[str]
#: what `rnnedge.fileio.atomic_write` adds to a name for its temporary file (`.NAME.PID.tmp`)
TEMP_NAME_EXTRA = len(".") + len(".4294967295.tmp")


def _listing(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _exists(path: Path, flag: str) -> bool:
    try:
        return path.exists()
    except OSError as exc:  # a name too long, a loop of links
        raise UsageError(f"{flag} '{path}' cannot be used: {exc.strerror or exc}") from None


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file (through links too); False when either is missing."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _existing_ancestor(path: Path) -> Path:
    """The nearest folder above `path` that exists (the one new folders would go into)."""
    here = path.absolute().parent
    while not here.exists() and here != here.parent:
        here = here.parent
    return here


def _check_writable(path: Path, flag: str, value: PathLike) -> None:
    """The folder exists or can be made, this process may create files there, and the name
    (with the temporary name written first) fits the filesystem."""
    anc = _existing_ancestor(path)
    if not anc.is_dir():
        raise UsageError(f"{flag} '{value}' lies below '{anc}', which is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=anc):
            pass
    except OSError as exc:
        raise UsageError(
            f"{flag} '{value}' cannot be written: no new file can be made in "
            f"'{anc}' ({exc.strerror or exc})"
        ) from None
    try:
        limit = os.pathconf(anc, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    longest = max((len(os.fsencode(p)) for p in path.absolute().relative_to(anc).parts), default=0)
    if longest + TEMP_NAME_EXTRA > limit:
        raise UsageError(
            f"{flag} '{value}' has a name of {longest} bytes; this filesystem "
            f"takes {limit}, and rnnedge needs {TEMP_NAME_EXTRA} of them for "
            "the temporary file it writes first"
        )


def _not_an_input(
    path: Path, flag: str, value: PathLike, inputs: Iterable[PathLike | None]
) -> None:
    for inp in inputs:
        if inp is not None and same_file(path, inp):
            raise UsageError(
                f"{flag} '{value}' is the input '{inp}'; writing it would destroy "
                "what the command reads (--force does not change that); choose "
                "another path"
            )


def output_file(
    value: PathLike,
    flag: str,
    *,
    force: bool,
    suffixes: Sequence[str] = (),
    inputs: Iterable[PathLike | None] = (),
) -> Path:
    """A file the command will write.

    Args:
        value: The path as given.
        flag: The option, for messages.
        force: Whether an existing file may be replaced.
        suffixes: Suffixes the command can write (lower case); empty takes any.
        inputs: Files the command reads, which the output must not be.
    """
    path = Path(value)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(
            f"{flag} '{value}' must end in {_listing(list(suffixes))}; the "
            "suffix says what the file holds"
        )
    if _exists(path, flag) and path.is_dir():
        raise UsageError(f"{flag} '{value}' is a folder; expected a file path")
    _not_an_input(path, flag, value, inputs)
    if _exists(path, flag) and not force:
        raise UsageError(f"{flag} '{value}' exists; pass --force to replace it")
    _check_writable(path, flag, value)
    return path


def optional_output_file(
    value: PathLike | None,
    flag: str,
    *,
    force: bool,
    suffixes: Sequence[str] = (),
    inputs: Iterable[PathLike | None] = (),
) -> Path | None:
    """`output_file` for an output that may not be asked for (None stays None)."""
    if value is None:
        return None
    return output_file(value, flag, force=force, suffixes=suffixes, inputs=inputs)


def output_folder(
    value: PathLike,
    flag: str,
    *,
    force: bool,
    writes: Sequence[str],
    inputs: Iterable[PathLike | None] = (),
) -> Path:
    """A folder the command writes the files `writes` into (made when missing).

    Any of them already there needs `force`; none of them, nor the folder, may be an input.
    """
    path = Path(value)
    if _exists(path, flag) and not path.is_dir():
        raise UsageError(f"{flag} '{value}' is a file; expected a folder")
    inputs = list(inputs)
    _not_an_input(path, flag, value, inputs)
    for name in writes:
        _not_an_input(path / name, flag, path / name, inputs)
    there = [name for name in writes if (path / name).exists()]
    if there and not force:
        raise UsageError(
            f"{flag} '{value}' already holds {', '.join(there)}; pass --force to "
            "replace them, or choose another folder"
        )
    _check_writable(path / "_", flag, value)
    return path
