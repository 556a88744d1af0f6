"""The package version, from the installed distribution's metadata (the
`version` of pyproject.toml), with a fallback for a source tree that is not
installed (e.g. on sys.path through PYTHONPATH)."""
from __future__ import annotations

FALLBACK = "0.1.0+unknown"


def version() -> str:
    """`importlib.metadata.version("fusedrnn")`, or FALLBACK when not installed."""
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as _dist_version
    except ImportError:  # pragma: no cover - Python < 3.8
        return FALLBACK
    try:
        return _dist_version("fusedrnn")
    except PackageNotFoundError:
        return FALLBACK
