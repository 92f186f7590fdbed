"""The long-running processes: ``slaledger worker`` (one stream worker: the ticket agent,
the deadline timer and the HTTP API), ``slaledger project`` (the SQL projector and
/metrics) and ``slaledger dev`` (a broker, the archive restored into it, a worker and the
projector in one process, for a newcomer's machine)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from .cli_common import DATABASE_HELP, UsageError, command_settings, connection_options, log_progress, reach_broker
from .logs import configure_logging
from .settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

MIN_DEV_TOKEN = 16  # SLALEDGER_DEV_TOKEN: shorter is guessable
DEV_TOKEN_FILE = "dev-token"


def add_parsers(commands: Any) -> None:
    """``worker`` and ``project`` (``dev`` is ``add_dev_parser``: it is listed last)."""
    worker = commands.add_parser("worker", help="run one stream worker against any Kafka")
    _worker_flags(worker)
    connection_options(worker, broker=True, data_dir=None)
    worker.set_defaults(handler=cmd_worker)

    project = commands.add_parser("project", help="project the events topic into SQL and serve /metrics")
    connection_options(project, broker=True, database=DATABASE_HELP)
    project.add_argument("--policy", dest="policy_file", help="policy file (TOML)")
    project.add_argument("--metrics-port", type=int, help="port of /metrics (default 9108; 0: none)")
    project.add_argument("--rebuild", action="store_true", help="replay from offset 0 into shadow tables and swap")
    project.add_argument("--once", action="store_true", help="stop at the end of the topic instead of following")
    project.set_defaults(handler=cmd_project)


def add_dev_parser(commands: Any) -> None:
    dev = commands.add_parser("dev", help="embedded broker + worker + API on one port")
    _worker_flags(dev)
    dev.add_argument("--broker-port", type=int, help="port of the embedded broker (default: a free one)")
    dev.add_argument("--broker", help="use this running broker (kafka://host:port) instead of an embedded one; "
                                      "it keeps the log, so nothing is restored into it (a Tansu broker "
                                      "also needs SLALEDGER_EMBEDDED=1)")
    dev.add_argument("--kafka", action="store_true",
                     help="run a local single-node Apache Kafka (needs Java; jars fetched once by Maven) with its "
                          "data under DATA_DIR/kafka: the log survives a restart; on its first start the "
                          "archive is restored into it, as into the embedded broker")
    dev.add_argument("--demo", action="store_true", default=None, help="feed a realistic synthetic stream")
    dev.set_defaults(handler=cmd_dev)


def _worker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, dest="web_port", help="HTTP port (env SLALEDGER_WEB_PORT, default 8080)")
    parser.add_argument("--host", dest="web_host", help="HTTP bind address (default 127.0.0.1)")
    connection_options(parser, data_dir="local state directory (env SLALEDGER_DATA_DIR, default ./data)")
    parser.add_argument("--policy", dest="policy_file", help="policy file (TOML)")
    parser.add_argument("--partitions", type=int, help="partitions of the ticket topics")
    parser.add_argument("--timer-interval", type=float, help="seconds between deadline checks (default 0.5)")


def cmd_worker(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    _check_port_free(settings.web_host, settings.web_port)
    return _run_worker(settings)


def cmd_project(args: argparse.Namespace) -> int:
    from .bootstrap import serve_projector

    settings = command_settings(args)
    configure_logging(settings.log_format, settings.log_level)
    if not args.rebuild:
        return serve_projector(settings, follow=not args.once)
    reach_broker(settings)  # before the bar counts the topic
    with log_progress(settings, "kafka", None, "Reconstruction") as bar:
        return serve_projector(settings, rebuild=True, progress=bar.update)


def _restart_process() -> None:
    """A worker whose table recovery stalled starts again, as a fresh process with the same
    arguments and pid (what a crash and a supervisor's restart would do, without waiting
    for either): the group, the changelog and the stores all tolerate a stop at any point."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _run_worker(settings: Settings) -> int:
    import faust

    from .bootstrap import build_worker, engine_for

    policy = settings.policy()  # fail fast on a bad policy file; parsed once (a restart pays for each parse)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    configure_logging(settings.log_format, settings.log_level)
    # The token database is first used by a request and Faust retries an absent broker
    # forever: both are checked here, so that a worker that cannot work stops at start.
    if settings.database_url:
        with engine_for(settings).connect():
            pass
    reach_broker(settings)
    structlog.get_logger("slaledger").info("worker starting", settings=settings.public())
    try:
        pipeline = build_worker(settings, on_recovery_stalled=_restart_process, policy=policy)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    worker = faust.Worker(pipeline.app, loglevel=settings.log_level.upper(), quiet=True,
                          redirect_stdouts=False, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Embedded broker, archive restore, worker (API + /metrics) and projector in one process."""
    import dataclasses
    import threading

    from prometheus_client import REGISTRY

    from projections.migrate import create_schema
    from projections.restore import LogNotArchived, restore_into_empty_log
    from projections.tokens import TokenError, ensure_token
    from streams.kafka_acls import ADMIN
    from streams.topics import create_topics

    from .bootstrap import engine_for, start_projector_thread
    from .brokers.embedded import EmbeddedBroker
    from .brokers.kafka_cluster import BrokerError, KafkaCluster

    given_token = os.environ.get("SLALEDGER_DEV_TOKEN")
    if given_token is not None and len(given_token) < MIN_DEV_TOKEN:
        raise UsageError(f"SLALEDGER_DEV_TOKEN: {len(given_token)} characters, at least {MIN_DEV_TOKEN} "
                         "(whoever guesses it acts as an agent)")
    base = command_settings(args, log_format="console")
    configure_logging(base.log_format, base.log_level)
    _check_port_free(base.web_host, base.web_port)  # before anything is started or printed
    Path(base.data_dir).mkdir(parents=True, exist_ok=True)
    base.policy()  # a bad policy file stops here, before anything starts
    if args.kafka and args.broker:
        raise UsageError("--kafka and --broker are exclusive: --kafka runs its own Apache Kafka")
    engine = engine_for(base)
    create_schema(engine)  # and so does a database that refuses
    if args.broker:
        reach_broker(base)
    # An embedded broker is empty at each start (the archive is restored into it); a broker
    # given with --broker outlives this process and keeps the log itself, and so does the
    # Apache Kafka of --kafka (its data directory is kept under DATA_DIR/kafka) once its first
    # start has received the archive.
    broker: EmbeddedBroker | KafkaCluster | None = None
    if args.kafka:
        broker = KafkaCluster(Path(base.data_dir) / "kafka", 1, port=args.broker_port)
    elif not args.broker:
        broker = EmbeddedBroker(port=args.broker_port, log_path=Path(base.data_dir) / "broker.log")
    if broker is not None:
        try:
            broker.start()
        except BrokerError as exc:
            raise UsageError(str(exc)) from None
    stop = threading.Event()
    projector: threading.Thread | None = None
    try:
        own: dict[str, object] = {"broker_url": broker.url, "embedded": broker.embedded} if broker else {}
        if isinstance(broker, KafkaCluster):  # secured like production; one process in every role: the admin
            own.update(dataclasses.asdict(broker.security(ADMIN)))
        from .evidence_cli import dev_signing_key
        from .members import EXAMPLE_FILE

        # dev names the example members directory unless told otherwise (filings are checked against it)
        settings = command_settings(args, log_format="console", **own, session_timeout=4.0, heartbeat_interval=0.5,
                             rebalance_timeout=2.0, database_url=base.database, **dev_signing_key(base),
                             members_file=base.members_file or (str(EXAMPLE_FILE) if EXAMPLE_FILE.is_file() else ""))
        create_topics(settings.bootstrap, settings.partitions)
        if isinstance(broker, KafkaCluster):  # the principals' ACLs, for a worker started beside it
            from streams.kafka_acls import apply_acls

            apply_acls(settings.bootstrap)
        restored = 0
        if broker is not None:  # a log of its own: empty (restored like the embedded one) or the archive's
            try:
                restored = restore_into_empty_log(engine, settings.bootstrap)
            except LogNotArchived as exc:
                raise UsageError(f"{exc}: the data directory {base.data_dir} was used by the embedded broker "
                                 f"after this Apache Kafka; move {Path(base.data_dir) / 'kafka'} aside and "
                                 "start again: the archive is then restored into a fresh Kafka") from None
        dev_token = given_token or _dev_token(engine, Path(base.data_dir) / DEV_TOKEN_FILE)
        try:
            ensure_token(engine, dev_token, "agent", "dev")
        except TokenError as exc:
            raise UsageError(f"SLALEDGER_DEV_TOKEN: {exc}") from None
        projector = start_projector_thread(settings, engine, settings.policy(), stop, REGISTRY)
        print(f"slaledger dev: http://{settings.web_host}:{settings.web_port}/  "
              f"(web view /, API /api/tickets, metrics /metrics, broker {settings.bootstrap}, "
              f"database {settings.database}, {restored} archived events restored); Ctrl-C stops\n"
              f"agent token: {dev_token}   (curl -H 'Authorization: Bearer {dev_token}' …)", flush=True)
        return _run_worker(settings)
    finally:
        stop.set()
        if projector is not None:
            projector.join(timeout=10)
        if broker is not None:
            broker.stop()


def _dev_token(engine: Engine, path: Path) -> str:
    """``slaledger dev``'s agent token: the one kept in the data directory (mode 0600) while it
    is live, so that a restart neither leaves another live token behind nor breaks a newcomer's
    ``TOKEN=$(cat data/dev-token)``; a new one when absent or revoked."""
    import secrets

    from projections.tokens import token_is_live

    try:  # kept only if nobody else may read it, and still a live agent token
        kept = path.read_text(encoding="utf-8").strip() if path.stat().st_mode & 0o077 == 0 else ""
    except (OSError, UnicodeDecodeError):
        kept = ""
    if kept and token_is_live(engine, kept, role="agent"):
        return kept
    secret = "slt_dev_" + secrets.token_urlsafe(16)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secret + "\n")
    return secret


def _check_port_free(host: str, port: int) -> None:
    """A port another process listens on is one line before anything starts (not a URL and a
    token printed as if started, then a traceback)."""
    import socket

    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"port {port} on {host} is taken ({exc.strerror}): another `slaledger dev` or "
                             "worker? Stop it, or choose another port with --port") from None
