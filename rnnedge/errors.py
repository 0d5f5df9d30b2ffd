"""One error hierarchy, so the CLI can map each class of failure to its own exit code.

Every message is meant to be shown to a user as one line: what was given, what was expected,
and what to do about it.
"""

from __future__ import annotations


class RnnEdgeError(Exception):
    """Base of every error rnnedge raises on purpose."""

    exit_code: int = 1


class InputError(RnnEdgeError, ValueError):
    """Data handed to rnnedge has the wrong shape, dtype, values or length."""

    exit_code = 3


class ModelFileError(RnnEdgeError):
    """A model, checkpoint or data file is missing, corrupt, or not what it claims to be."""

    exit_code = 4


class RuntimeUnavailableError(RnnEdgeError):
    """A runtime (or an optional package it needs) is unknown or not installed here."""

    exit_code = 5


class UnsupportedModelError(RnnEdgeError):
    """The model cannot be taken where it was asked to go (e.g. `proj_size > 0` to ONNX)."""

    exit_code = 6


class ExportError(RnnEdgeError):
    """Export failed, or produced a file that is wrong at shapes other than the example."""

    exit_code = 7


class ParityError(RnnEdgeError):
    """A runtime's outputs differ from eager PyTorch beyond the tolerance."""

    exit_code = 8


class StreamError(RnnEdgeError):
    """A stream was used in a way its state does not allow (closed, wrong batch, bidirectional)."""

    exit_code = 9


class DeviceError(RnnEdgeError):
    """The GPU failed while running (out of memory, illegal address, a cuDNN/cuBLAS status).

    Not the inputs' fault, so not an `InputError`: the same call may succeed with a smaller
    batch, on another device, or after the process (whose CUDA context may be lost) restarts.
    """

    exit_code = 10


class MachineBusyError(RnnEdgeError):
    """Other processes kept the CPUs busy, so a measurement made now would mislead; none kept."""

    exit_code = 11


class QualityError(RnnEdgeError):
    """A model works but is not good enough to keep: it does not beat a persistence forecast
    (under `--strict`), or a reduced-precision copy loses too much of its accuracy."""

    exit_code = 12


EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (
        RnnEdgeError,
        InputError,
        ModelFileError,
        RuntimeUnavailableError,
        UnsupportedModelError,
        ExportError,
        ParityError,
        StreamError,
        DeviceError,
        MachineBusyError,
        QualityError,
    )
}
