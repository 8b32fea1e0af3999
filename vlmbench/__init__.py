"""vlmbench: evaluate vision-language models and compare their design choices head to head."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

try:
    # The one source of the version is pyproject.toml; installing (also editable) records it here.
    __version__: str = _distribution_version("vlmbench")
except PackageNotFoundError:  # imported from a checkout that was never installed, or while building
    __version__ = "0+unknown"
