"""Faust's aiohttp web server without Faust's own web routes.

Faust mounts built-in blueprints on the worker's port: ``/table/…`` (any key of any table:
a ticket's member, subject and dates), ``/router/…`` (the cluster's partition map), and,
depending on settings, ``/graph/``, sensor statistics, ``/assignment/``, ``/performance/``
and a production index at ``/``. None is the product's and none is authenticated, so this
driver serves none of them: the product's routes are attached from outside
(``slaledger.web``) and are the only ones the server has.

Forwarded reads (``app.table_route``) do not need ``/router/``: the owner of a key is found
from the partition assignment (``app.router.key_store``) and the request is sent to the same
path on that worker.
"""

from __future__ import annotations

from typing import ClassVar

from faust.web.base import _BPList
from faust.web.drivers import DRIVERS
from faust.web.drivers.aiohttp import Web as AiohttpWeb

SCHEME = "slaledger-web"


class Web(AiohttpWeb):
    default_blueprints: ClassVar[_BPList] = ()
    production_blueprints: ClassVar[_BPList] = ()
    debug_blueprints: ClassVar[_BPList] = ()
    optional_blueprints: ClassVar[_BPList] = ()


def register() -> None:
    """Make ``slaledger-web://`` a Faust web driver (idempotent)."""
    DRIVERS.aliases.setdefault(SCHEME, f"{__name__}:Web")
