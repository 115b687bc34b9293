"""Library versions recorded in every manifest (bench.json, train.json, quantize.json)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def library_versions(*packages: str) -> dict[str, str]:
    """unlearnops, Python and each named distribution's installed version ("not installed" if absent)."""
    from . import __version__

    found = {"unlearnops": __version__, "python": platform.python_version()}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
