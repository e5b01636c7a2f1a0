"""adaptive-bkg: an online-learning importance-sampling filter for simulated background samples."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adaptive-bkg")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
