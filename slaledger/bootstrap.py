"""The composition root: the one place where the layers meet.

``build_worker`` makes the Faust worker (``streams``) from settings passed in as values,
then attaches the edges to it from outside: the HTTP API and the web pages get narrow
ports (``slaledger.web.ports``) onto the worker, the SQL read model and the token store
(``projections``); the demo feeder gets a way to send commands. Nothing below this package
imports it or the settings.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from sla.events import Event
from sla.policy import Policy, PolicyError
from sla.ticket import Ticket
from streams.app import Pipeline

from .command_metrics import FENCED_WRITES, MeasuredCommands
from .failures import CommandFailed
from .members import directory, load_members
from .settings import Settings
from .web import register
from .web.ports import Ports
from .web.throttle import trusted_networks

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from sqlalchemy import Engine

    from projections.head_signer import HeadSigner

# What only the projector, the archive's pages or the evidence commands use is imported where
# it is used: a worker's start does not pay for it (#31: import time is part of a restart).

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TicketLists:
    """Lists of tickets: the SQL read model when configured (every ticket, whichever worker
    owns it), else this worker's own partitions."""

    engine: Any
    pipeline: Pipeline

    async def find(self, statuses: Collection[str], member: str | None) -> list[Ticket]:
        if self.engine is None:
            return self.pipeline.local_tickets(statuses, member)
        from projections.queries import list_tickets

        engine = self.engine
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: list_tickets(engine, statuses=statuses, member=member))


@dataclass(frozen=True)
class SqlArchive:
    """The archive port: the SQL archive's timeline and dispute files.

    A worker never signs: its dispute files carry the latest head the projector signed (the
    projector alone holds the operator's key and signs within ``SLALEDGER_HEAD_INTERVAL``
    seconds of new events), so a download costs no signature and cannot grow
    ``signed_heads``; events newer than that head are shown as not yet covered."""

    engine: Any
    policy: Policy

    def events(self, ticket_id: str) -> list[Event]:
        from projections.queries import ticket_events

        return ticket_events(self.engine, ticket_id)

    def dispute_file(self, ticket_id: str, fmt: str) -> tuple[bytes, bool] | None:
        from projections.audit.dispute_file import dispute_file, stable_json
        from projections.audit.replay import Filters, replay
        from projections.audit.sources import archive_records
        from projections.report import to_html, to_markdown, to_pdf

        result = replay(archive_records(self.engine, ticket=ticket_id), self.policy, Filters(ticket=ticket_id),
                        source="archive", engine=self.engine)
        if ticket_id not in result.tickets:
            return None
        doc = dispute_file(result)
        if fmt == "pdf":
            return to_pdf(doc), result.ok
        text = {"json": stable_json, "md": to_markdown, "html": to_html}[fmt](doc)
        return text.encode(), result.ok


@dataclass(frozen=True)
class ArchiveDrafts:
    """The what-if port: the draft policies of a directory tried on the SQL archive."""

    engine: Any
    policy: Policy
    directory: Path

    def drafts(self) -> list[str]:
        return sorted(p.name for p in self.directory.glob("*.toml") if p.is_file())

    def compare(self, draft: str, member: str | None, filed_from: datetime, filed_to: datetime) -> dict[str, Any]:
        from projections.audit.replay import Filters
        from projections.audit.sources import archive_records
        from projections.whatif import compare, ticket_histories

        from .whatif_cli import read_policy

        if draft not in self.drafts():  # a name from the list, never a path
            raise PolicyError(f"no draft named {draft!r} in the drafts directory")
        filters = Filters(member=member, filed_from=filed_from, filed_to=filed_to)
        now = datetime.now(UTC)
        comparison = compare(ticket_histories(archive_records(self.engine, by_ticket=True), filters), self.policy,
                             read_policy(str(self.directory / draft)), now)
        return comparison.document(source="archive", filters=filters, draft_name=draft, draft_version=None,
                                   generated_at=now)


def build_worker(settings: Settings, on_recovery_stalled: Callable[[], None] | None = None,
                 policy: Policy | None = None) -> Pipeline:
    """The worker with its API, web pages and (``settings.demo``) demo feeder attached, under
    ``policy`` (the settings' when None: the caller may have parsed it already). Raises
    ValueError on settings that cannot work together."""
    policy = policy or settings.policy()
    engine = None
    if settings.database_url:
        from sqlalchemy import create_engine

        engine = create_engine(settings.database, pool_pre_ping=True)
    if settings.auth and engine is None:
        raise ValueError("API authentication needs the token database: set SLALEDGER_DATABASE_URL "
                         "(or SLALEDGER_AUTH=off for a worker nobody can reach)")
    if settings.web_session_idle <= 0 or settings.web_session_lifetime <= 0:
        raise ValueError("SLALEDGER_WEB_SESSION_IDLE and SLALEDGER_WEB_SESSION_LIFETIME: seconds, more than 0")
    members = directory(load_members(settings.members_file)) if settings.members_file else None
    if members is None:
        log.warning("no members directory (SLALEDGER_MEMBERS_FILE): filings may name any member")
    pipeline = Pipeline(settings, policy, on_recovery_stalled)
    if pipeline.fence is not None:
        FENCED_WRITES.fences.append(pipeline.fence)
    ports = Ports(tickets=pipeline, commands=MeasuredCommands(pipeline), finder=TicketLists(engine, pipeline),
                  worker=pipeline, policy=policy, members=members,
                  auth=_token_store(settings, engine),
                  archive=SqlArchive(engine, policy) if engine is not None else None,
                  whatif=(ArchiveDrafts(engine, policy, Path(settings.policy_drafts_dir))
                          if engine is not None and settings.policy_drafts_dir else None),
                  secure_cookie=settings.secure_cookie, trusted_proxies=trusted_networks(settings.trusted_proxies))
    register(pipeline.app, pipeline.tickets, ports)
    if settings.demo:
        from .demo import DemoFeeder

        pipeline.app.task(DemoFeeder(pipeline.send).run)
    return pipeline


def _token_store(settings: Settings, engine: Engine | None) -> Any:
    """The API's token and session store (None: authentication off)."""
    if not settings.auth or engine is None:
        return None
    from projections.tokens import SessionLimits, TokenStore

    return TokenStore(engine, sessions=SessionLimits(timedelta(seconds=settings.web_session_idle),
                                                     timedelta(seconds=settings.web_session_lifetime)))


def signing_key(settings: Settings) -> Any:
    """The operator's Ed25519 key of the settings, else the one ``slaledger dev`` wrote in the
    data directory (so ``audit sign-head --data-dir D`` finds dev's key), else None (raises
    HeadError when unreadable)."""
    from projections.heads import PRIVATE_FILE, operator_key

    key_file = settings.signing_key_file
    if not key_file and not settings.signing_key and (Path(settings.data_dir) / PRIVATE_FILE).is_file():
        key_file = str(Path(settings.data_dir) / PRIVATE_FILE)
    return operator_key(key_file, settings.signing_key)


def head_signer(settings: Settings, policy: Policy) -> HeadSigner | None:
    """The projector's head schedule when a signing key is configured."""
    from projections.head_signer import HeadSigner

    key = signing_key(settings)
    if key is None:
        log.warning("no signing key (SLALEDGER_SIGNING_KEY_FILE): the archive's tree heads are not signed")
        return None
    return HeadSigner(key, policy, timedelta(seconds=settings.head_interval), settings.origin, settings.bootstrap,
                      settings.embedded)


def evidence_options(settings: Settings, engine: Engine | None, head_id: int | None) -> dict[str, Any]:
    """``replay``'s head and signer for a dispute file: the head asked for (HeadError when
    unknown), and the operator's key to sign one on demand when configured."""
    from projections.heads import HeadError, get_head, sign_head

    if engine is None:
        return {}
    head = None
    if head_id is not None:
        head = get_head(engine, head_id)
        if head is None:
            raise HeadError(f"--head {head_id}: no such signed head")
    key = signing_key(settings)
    policy = settings.policy()
    return {"head": head,
            "signer": (lambda: sign_head(engine, key, policy, origin=settings.origin)) if key is not None else None}


def engine_for(settings: Settings, *, existing: bool = False) -> Engine:
    """The SQL database of the settings. The data directory of the default SQLite file is
    created (dev); the directory of a SQLite URL given explicitly must exist: a typo in
    ``--database`` must fail, not answer from a new empty database in a new directory.
    ``existing``: a command that only uses the database (tokens, audit, reports) refuses a
    default SQLite file that is not there, instead of creating ``./data`` wherever it runs
    (a token created there would be refused by the running server)."""
    from sqlalchemy import create_engine

    if settings.database.startswith("sqlite:///"):
        path = Path(settings.database.removeprefix("sqlite:///"))
        directory = path.parent
        if not settings.database_url and existing:
            try:
                path.stat()  # a data directory that is a file: NotADirectoryError, one line too
            except FileNotFoundError:
                raise CommandFailed(f"{path} does not exist: no slaledger tables in a fresh data directory "
                                    "(nothing was created); run this where `slaledger dev` runs, or give the "
                                    "--data-dir it uses (or --database)") from None
        elif not settings.database_url:
            directory.mkdir(parents=True, exist_ok=True)
        elif not directory.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such directory for the SQLite database (--database)",
                                    str(directory))
    # a host that drops packets must not hold a command for libpq's default (no limit)
    connect_args = {"connect_timeout": 10} if settings.database.startswith("postgresql") else {}
    return create_engine(settings.database, pool_pre_ping=True, connect_args=connect_args)


def attach_read_side(settings: Settings, engine: Engine, policy: Policy, stop: threading.Event,
                     registry: CollectorRegistry | None) -> None:
    """What the projector serves besides its SQL rows: the SLA metrics (with the consumer
    lag measured apart) in ``registry``, and the per-ticket alerts pushed to Alertmanager."""
    from projections.alerts import start_alert_pusher
    from projections.lag import LagProbe
    from projections.metrics import ProjectionCollector
    from projections.witnessing import WitnessCollector, parse_witnesses, start_witness_feeds

    if registry is not None:
        registry.register(ProjectionCollector(engine, lag=LagProbe(engine, settings.bootstrap), policy=policy))
    witnesses = parse_witnesses(settings.witnesses)
    if witnesses:
        start_witness_feeds(engine, witnesses, stop, settings.head_interval)
        if registry is not None:
            registry.register(WitnessCollector(witnesses))
    if settings.alertmanager_url:
        alert_at = settings.evening_alert_time
        support = policy.versions[-1].calendars.get("support")
        if support is not None and not support.open_at <= alert_at < support.close_at:
            raise CommandFailed(f"SLALEDGER_EVENING_ALERT_AT: {alert_at:%H:%M} is not within the support hours "
                                f"({support.open_at:%H:%M}–{support.close_at:%H:%M}): the list must go out before "
                                "the closing")
        start_alert_pusher(engine, settings.alertmanager_url, settings.ticket_url, policy, settings.alert_interval,
                           stop, alert_at)


def start_projector_thread(settings: Settings, engine: Engine, policy: Policy, stop: threading.Event,
                           registry: CollectorRegistry) -> threading.Thread:
    """The projector in a thread of this process (``slaledger dev``), with its read side."""
    from projections.projector import run_projector

    thread = threading.Thread(target=run_projector, name="projector", daemon=True,
                              args=(engine, settings.bootstrap, policy),
                              kwargs={"follow": True, "should_stop": stop.is_set,
                                      "heads": head_signer(settings, policy)})
    thread.start()
    attach_read_side(settings, engine, policy, stop, registry)
    return thread


def serve_projector(settings: Settings, *, rebuild: bool = False, follow: bool = True,
                    progress: Callable[[int], object] | None = None) -> int:
    """The projector process: check the schema, project (follow the topic), serve /metrics, push alerts,
    stop on SIGTERM. ``progress`` follows a rebuild (records read, batch by batch)."""
    from prometheus_client import CollectorRegistry

    from projections.migrate import create_schema
    from projections.projector import run_projector
    from projections.rebuild import rebuild as rebuild_projection
    from projections.tokens import TokenStore
    from streams.kafka_tools import wait_for_broker

    from .web.metrics_server import metrics_app, serve_metrics

    policy = settings.policy()
    engine = engine_for(settings)
    create_schema(engine)
    wait_for_broker(settings.bootstrap, settings.broker_timeout)  # absent at start: fail, don't wait
    log.info("projector configured", settings=settings.public())
    if rebuild:
        rebuild_projection(engine, settings.bootstrap, policy, progress=progress)
        return 0
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("projector stopping", signal=signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.metrics_port:
        registry = CollectorRegistry()
        store = TokenStore(engine) if settings.auth else None
        serve_metrics(metrics_app(registry, store, trusted_networks(settings.trusted_proxies)), settings.web_host,
                      settings.metrics_port)
        log.info("projector metrics served", url=f"http://{settings.web_host}:{settings.metrics_port}/metrics")
    else:
        registry = None
    attach_read_side(settings, engine, policy, stop, registry)
    applied = run_projector(engine, settings.bootstrap, policy, follow=follow, should_stop=stop.is_set,
                            heads=head_signer(settings, policy))
    log.info("projector stopped", events_applied=applied)
    return 0
