"""One PostgreSQL role per process (#25): the migration job (``slaledger db migrate``, run as
a process with the superuser) on a fresh database, then each process's code run as its own
role, and each refusal the grants promise.

Roles are cluster-wide: each test names its roles after a prefix of its own
(``--role-prefix``), and drops them with its database. The server's loopback trusts every
login, so these tests show the grants, not the passwords (``tests/unit/test_roles.py``
checks the SCRAM verifiers).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from projections.audit.sources import archive_records
from projections.deliveries import record_sent, was_sent
from projections.heads import add_cosignature, latest_head, sign_head
from projections.metrics import ProjectionCollector
from projections.migrate import create_schema
from projections.projector import run_projector
from projections.queries import list_tickets, ticket_events
from projections.rebuild import rebuild
from projections.roles import LOGIN_ROLES, PASSWORD_FILES, role_names
from projections.tokens import TokenStore, create_token, revoke_token
from slaledger.bootstrap import SqlArchive
from slaledger.itop.sync import Checkpoint, CheckpointStore
from slaledger.settings import load_policy
from tests.integration.conftest import Broker
from tests.integration.test_projector import history, publish

pytestmark = pytest.mark.integration


class Roles:
    """The roles of one test database: an engine per kind, connected as that role."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix, self.names = url, prefix, role_names(prefix)
        self.engines: dict[str, Engine] = {}

    def __getitem__(self, kind: str) -> Engine:
        if kind not in self.engines:
            self.engines[kind] = create_engine(self.url.replace("://postgres@", f"://{self.names[kind]}@"))
        return self.engines[kind]

    def dispose(self) -> None:
        for engine in self.engines.values():
            engine.dispose()


def migrate(url: str, passwords: Path, prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slaledger.cli", "db", "migrate", "--database", url,
                           "--passwords", str(passwords), "--role-prefix", prefix],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def roles(database: str, tmp_path: Path) -> Iterator[Roles]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    for kind in LOGIN_ROLES:
        (tmp_path / PASSWORD_FILES[kind]).write_text(f"{kind}-password-{uuid.uuid4().hex}\n")
    done = migrate(database, tmp_path, prefix)
    assert done.returncode == 0, done.stderr
    result = Roles(database, prefix)
    try:
        yield result
    finally:
        result.dispose()
        superuser = create_engine(database)
        names = ", ".join(f'"{n}"' for n in result.names.values())
        with superuser.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {names} CASCADE"))  # its tables, its grants here and on the database
            conn.execute(text(f"DROP ROLE {names}"))
        superuser.dispose()


def refused(engine: Engine, sql: str) -> None:
    """``sql`` is refused for want of a privilege (nothing else: not a missing table)."""
    with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
        conn.execute(text(sql))
    # 42501 insufficient_privilege, 25006 read_only_sql_transaction
    assert getattr(caught.value.orig, "sqlstate", None) in ("42501", "25006"), (sql, caught.value.orig)


def allowed(engine: Engine, sql: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql))


def test_the_job_makes_an_owner_nobody_logs_in_as_and_is_idempotent(roles: Roles, database: str,
                                                                      tmp_path: Path) -> None:
    superuser = create_engine(database)
    try:
        with superuser.connect() as conn:
            owners = set(conn.scalars(text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")))
            logins = dict(conn.execute(text("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(:n)"),
                                       {"n": list(roles.names.values())}).all())
        assert owners == {roles.names["owner"]}
        assert logins == {name: kind != "owner" for kind, name in roles.names.items()}
        # run again (an upgrade, a restart of the job): the same grants, no error
        before = grants(superuser, roles)
        again = migrate(database, tmp_path, roles.prefix)
        assert again.returncode == 0, again.stderr
        assert grants(superuser, roles) == before
        assert before[roles.names["worker"]]["event_archive"] == ["SELECT"]
        assert before[roles.names["projector"]]["event_archive"] == ["INSERT", "SELECT"]
        # a table another migration adds later (the web's sessions) is granted by the run after it
        with superuser.begin() as conn:
            conn.execute(text(f'SET LOCAL ROLE "{roles.names["owner"]}"'))
            conn.execute(text("CREATE TABLE IF NOT EXISTS web_sessions (session_hash varchar(64) PRIMARY KEY)"))
        assert migrate(database, tmp_path, roles.prefix).returncode == 0
        with superuser.connect() as conn:
            may = conn.scalar(text("SELECT has_table_privilege(:r, 'web_sessions', 'INSERT, UPDATE, DELETE, SELECT')"),
                              {"r": roles.names["worker"]})
        assert may
        assert grants(superuser, roles)[roles.names["projector"]] == before[roles.names["projector"]]
    finally:
        superuser.dispose()
    # no login role may change the schema, nor does any process need to: at the head, the
    # schema check of every command is a read
    for kind in ("projector", "worker", "itop", "report", "tokens"):
        create_schema(roles[kind])
        refused(roles[kind], "CREATE TABLE intruder (x int)")
    refused(roles["projector"], "DROP TABLE tickets")
    refused(roles["projector"], "ALTER TABLE event_archive ADD COLUMN x int")

    # a command run with a role its grants do not cover, or on a schema older than the code,
    # ends with one line naming what to do
    def cli(kind: str, *argv: str) -> subprocess.CompletedProcess[str]:
        url = database.replace("://postgres@", f"://{roles.names[kind]}@")
        return subprocess.run([sys.executable, "-m", "slaledger.cli", *argv, "--database", url],
                              capture_output=True, text=True, timeout=120, check=False)

    denied = cli("grafana", "audit", "verify")
    assert denied.returncode == 1 and denied.stderr.count("\n") == 1, denied.stderr
    assert "refused this command's role (permission denied for table" in denied.stderr
    superuser = create_engine(database)
    try:
        with superuser.begin() as conn:
            head = conn.scalar(text("SELECT version_num FROM alembic_version"))
            conn.execute(text("UPDATE alembic_version SET version_num = '0008'"))
        behind = cli("tokens", "token", "list")
        assert behind.returncode == 1, behind.stderr
        assert behind.stderr == (f"slaledger: error: the database schema is at revision 0008, this version needs "
                                 f"{head}: run the migration job first (`slaledger db migrate`, compose service "
                                 "db-migrate)\n")
    finally:
        with superuser.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
        superuser.dispose()


def grants(engine: Engine, roles: Roles) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants "
                                 "WHERE grantee = ANY(:n) ORDER BY 1, 2, 3"), {"n": list(roles.names.values())})
        for grantee, table, privilege in rows:
            out.setdefault(grantee, {}).setdefault(table, []).append(privilege)
    return out


@pytest.mark.parametrize("broker", ["tansu"], indirect=True)  # the grants do not depend on the broker
def test_each_process_does_its_work_and_nothing_else(roles: Roles, broker: Broker, database: str) -> None:
    policy = load_policy()
    events = history(12, datetime(2026, 3, 9, 8, 30, tzinfo=UTC))
    publish(broker, events)

    # the projector, as its role, projects: tickets, clocks, judgments, archive, tree, totals
    projector = roles["projector"]
    assert run_projector(projector, broker.bootstrap, policy, follow=False) == len(events)
    families = {m.name: m for m in ProjectionCollector(projector).collect()}  # what its /metrics reads
    assert sum(s.value for s in families["slaledger_events_processed"].samples) == len(events)
    key = Ed25519PrivateKey.generate()
    head = sign_head(projector, key, policy)
    assert head.tree_size == len(events)
    allowed(projector, f"UPDATE signed_heads SET published_at = now() WHERE head_id = {head.head_id}")
    add_cosignature(projector, head.head_id or 0, "\u2014 witness.example/w1 AAAA\n")  # a witness's line kept
    refused(projector, "UPDATE signed_heads SET signature = 'forged'")
    refused(projector, "DELETE FROM event_archive")
    refused(projector, "UPDATE event_archive SET envelope = '{}'")
    refused(projector, "TRUNCATE event_archive")
    refused(projector, "DELETE FROM merkle_nodes")
    refused(projector, "DELETE FROM ticket_map_nodes")  # the map as of every signed head stays provable
    refused(projector, "UPDATE ticket_map_commits SET tickets = 0")
    refused(projector, "DELETE FROM sla_judgments")
    refused(projector, "SELECT * FROM monthly_statements_sent")
    refused(projector, "INSERT INTO api_tokens (token_id, token_hash, role, label, created_at) "
                       "VALUES ('x', 'x', 'admin', 'x', now())")

    # token administration: its own role, tokens only
    tokens = roles["tokens"]
    token_id, secret = create_token(tokens, "agent", label="guichet")
    _, revoked = create_token(tokens, "auditor", label="ancien")
    assert revoke_token(tokens, revoked)
    refused(tokens, "UPDATE api_tokens SET token_hash = 'x'")
    refused(tokens, "DELETE FROM api_tokens")
    refused(tokens, "SELECT * FROM tickets")

    # the worker: authenticates, lists, shows a timeline and a dispute file (its proofs
    # against the projector's head); changes nothing of the archive, tickets or tokens
    worker = roles["worker"]
    store = TokenStore(worker)
    principal = store.authenticate(secret)
    assert principal is not None and principal.token_id == token_id
    assert store.authenticate(revoked) is None
    assert len(list_tickets(worker)) == 12
    assert [e.event_id for e in ticket_events(worker, "P-0000")] == [e.event_id for e in events
                                                                     if e.ticket_id == "P-0000"]
    body, ok = SqlArchive(worker, policy).dispute_file("P-0000", "json") or (b"", False)
    assert ok and b'"tree_size"' in body
    # with the ticket's whole history proven against the head's map of histories
    assert json.loads(body)["tickets"][0]["history_proof"]["count"] == len(ticket_events(worker, "P-0000"))
    refused(worker, "UPDATE ticket_map_tickets SET event_count = 0")
    refused(worker, "INSERT INTO ticket_map_nodes (level, idx, since_size, hash) VALUES (0, 0, 0, '')")
    refused(worker, "UPDATE event_archive SET envelope = '{}'")
    refused(worker, "DELETE FROM event_archive")
    refused(worker, "INSERT INTO tickets (ticket_id) VALUES ('X')")
    refused(worker, "UPDATE tickets SET status = 'closed'")
    refused(worker, "UPDATE api_tokens SET revoked_at = NULL")
    refused(worker, "INSERT INTO signed_heads (tree_size) VALUES (0)")
    refused(worker, "SELECT * FROM itop_checkpoints")

    # the iTop connector: its checkpoints and write-back records; reads what it writes back
    itop = roles["itop"]
    checkpoints = CheckpointStore(itop, "https://itop.example/webservices/rest.php")
    checkpoints.save("UserRequest", Checkpoint("2026-03-09 10:00:00", {"12": "2026-03-09 10:00:00"}))
    checkpoints.save("UserRequest", Checkpoint("2026-03-09 11:00:00", {}))
    assert checkpoints.load("UserRequest").watermark == "2026-03-09 11:00:00"
    checkpoints.map_tickets({"P-0001": ("UserRequest", "12", "R-000012")})
    allowed(itop, "INSERT INTO itop_writebacks (ticket_id, fact_key, written_at) VALUES ('P-0001', 'k', now())")
    from zoneinfo import ZoneInfo

    from slaledger.itop.writeback import collect

    targets, _, _ = collect(itop, checkpoints.source, tz=ZoneInfo("Europe/Paris"))
    assert set(targets) == {"P-0001"}
    refused(itop, "INSERT INTO tickets (ticket_id) VALUES ('X')")
    refused(itop, "UPDATE tickets SET status = 'closed'")
    refused(itop, "INSERT INTO event_archive (event_id) VALUES ('x')")
    refused(itop, "SELECT * FROM api_tokens")

    # the report job: reads the month, records its sendings
    report = roles["report"]
    record_sent(report, member="m-1", month="2026-03", recipient="r@example.org", message_id="<1@x>",
                pdf_sha256="0" * 64, sent_at=datetime.now(UTC))
    record_sent(report, member="m-1", month="2026-03", recipient="r@example.org", message_id="<2@x>",
                pdf_sha256="0" * 64, sent_at=datetime.now(UTC))
    assert was_sent(report, "m-1", "2026-03")
    assert latest_head(report) is not None and len(list_tickets(report, member="m-1")) == 4
    refused(report, "UPDATE tickets SET status = 'closed'")
    refused(report, "SELECT * FROM api_tokens")
    refused(report, "UPDATE event_archive SET actor = 'x'")

    # Grafana: the read model, read-only, no token, no archive
    grafana = roles["grafana"]
    with grafana.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM tickets")) == 12
        assert conn.scalar(text("SELECT count(*) FROM sla_clocks")) > 0
    refused(grafana, "SELECT * FROM api_tokens")
    refused(grafana, "SELECT envelope FROM event_archive")
    refused(grafana, "DELETE FROM dead_letters")
    refused(grafana, "CREATE TEMPORARY TABLE t (x int)")

    # the rebuild swaps tables: the owner's right, taken by the migration job's credentials
    # (the superuser here); the new tables are the owner's, and every role keeps its grants
    with pytest.raises(DBAPIError, match="permission denied to set role"):
        rebuild(projector, broker.bootstrap, policy)
    superuser = create_engine(database)
    try:
        assert rebuild(superuser, broker.bootstrap, policy) == len(events)
        with superuser.connect() as conn:
            owner = conn.scalar(text("SELECT tableowner FROM pg_tables WHERE tablename = 'tickets'"))
        assert owner == roles.names["owner"]
    finally:
        superuser.dispose()
    assert len(list_tickets(worker)) == 12
    later = history(2, datetime(2026, 3, 20, 8, 30, tzinfo=UTC), prefix="Q")
    publish(broker, later)
    assert run_projector(projector, broker.bootstrap, policy, follow=False) == len(later)
    with grafana.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM tickets")) == 14
    refused(worker, "INSERT INTO tickets (ticket_id) VALUES ('X')")
    assert sum(1 for _ in archive_records(worker)) == len(events) + len(later)


def test_two_jobs_on_one_server_at_once(roles: Roles, database: str, tmp_path: Path) -> None:
    """The same roles provisioned by two jobs at the same time (two databases of one
    server): both succeed, and each database grants its own tables. The second database was
    made before the job, by a superuser (a deployment from before the roles): its tables
    change hands."""
    import concurrent.futures

    second = database.rsplit("/", 1)[0] + f"/slaledger_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(database.rsplit("/", 1)[0] + "/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{second.rsplit("/", 1)[1]}"'))
    prefix = roles.prefix
    old = create_engine(second)
    create_schema(old)
    old.dispose()
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda url: migrate(url, tmp_path, prefix), [database, second]))
        assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
        upgraded = create_engine(second)
        with upgraded.connect() as conn:
            owners = set(conn.scalars(text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")))
        upgraded.dispose()
        assert owners == {roles.names["owner"]}
        other = create_engine(second.replace("://postgres@", f"://{roles.names['worker']}@"))
        try:
            with other.connect() as conn:
                assert conn.scalar(text("SELECT count(*) FROM event_archive")) == 0
        finally:
            other.dispose()
        refused(roles["worker"], "DELETE FROM event_archive")
    finally:
        dropper = create_engine(second)
        names = ", ".join(f'"{n}"' for n in roles.names.values())
        with dropper.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {names} CASCADE"))
        dropper.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{second.rsplit("/", 1)[1]}" WITH (FORCE)'))
        admin.dispose()
