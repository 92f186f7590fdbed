"""The HTTP edge: the JSON API and the web pages, attached to the worker's Faust web server
from outside (``register``); they reach the product only through ``ports.Ports``."""

from __future__ import annotations

from typing import Any

import faust

from .api import register_views
from .pages import register_pages
from .ports import Ports
from .whatif import register_whatif


def register(app: faust.App, route_table: Any, ports: Ports) -> None:
    """The API and the web pages, on the worker's port."""
    register_views(app, route_table, ports)
    register_pages(app, route_table, ports)
    register_whatif(app, ports)
