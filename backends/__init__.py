"""Backends: `get_backend("numpy" | "cupy")`. CuPy is imported only when asked for."""

from __future__ import annotations


class BackendUnavailable(Exception):
    """CuPy missing, no usable CUDA device, or an unknown backend name: one line for the user."""


# How a message of CuPy's unavailability ends: where the command cannot take NumPy instead
# (check-backends, which compares a backend with NumPy), it is left out of the line.
OR_USE_NUMPY = ", or use --backend numpy"


class CaptureUnavailable(Exception):
    """Why a backend cannot capture a step as a device graph here, known before trying."""


def get_backend(name: str = "numpy"):
    if name == "numpy":
        from .numpy_backend import NumpyBackend

        return NumpyBackend()
    if name == "cupy":
        try:
            from .cupy_backend import CupyBackend
        # CuPy 14 imports when its CUDA libraries do not load, and raises a RuntimeError with
        # its report at first use; ctypes' failed loads are OSErrors
        except (ImportError, OSError, RuntimeError) as error:
            raise BackendUnavailable(_cupy_import_message(error)) from None
        return CupyBackend()
    raise BackendUnavailable(f"unknown backend '{name}'; use numpy or cupy")


def _cupy_import_message(error: Exception) -> str:
    """One line: CuPy not installed, or installed but failing to load (a CUDA library missing
    or of another version), with the line of CuPy's own report that names the cause (after
    its "Original error:", else its last line of words)."""
    extras = ("pip install 'nnrun[cuda13]' (CUDA 13 drivers) or 'nnrun[cuda12]' (CUDA 12)"
              + OR_USE_NUMPY)
    if isinstance(error, ModuleNotFoundError) and error.name == "cupy":
        return f"backend 'cupy' needs CuPy, which is not installed ({error}): {extras}"
    lines = [line.strip() for line in str(error).splitlines() if any(map(str.isalnum, line))]
    original = [i for i, line in enumerate(lines) if line.startswith("Original error")]
    cause = (lines[original[0] + 1] if original and original[0] + 1 < len(lines)
             else lines[-1] if lines else type(error).__name__)
    return (f"backend 'cupy' needs CuPy, which is installed but fails to load ({cause}): "
            f"install the one for this machine's CUDA: {extras}")

