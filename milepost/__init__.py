"""Milepost: deploy, route, score and watch machine-learning models.

``milepost.Client`` is the Python entry point; ``milepost`` on the command line
is the CLI. Importing this package stays cheap: the client loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from milepost.core.version import __version__

if TYPE_CHECKING:
    from milepost.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from milepost.client import Client

        return Client
    raise AttributeError(name)
