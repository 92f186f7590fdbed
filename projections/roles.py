"""PostgreSQL least privilege: one login role per process, and the one job that sets them up.

``GRANTS`` is the only statement of who may do what to which table; ``provision`` (the
``slaledger db migrate`` job, the only user of the superuser) applies it:

1. as the superuser, it creates or updates the roles (each login role's password arrives
   as a SCRAM-SHA-256 verifier computed here, so no statement or server log ever holds
   it), keeps the database and the schema closed to everyone else, and hands every table
   still owned by someone else (a deployment from before this job) to the owner role;
2. as the owner role (``SET ROLE``), it runs the Alembic migrations, so every table
   belongs to a role nobody can log in as;
3. as the owner role again, in one transaction, it revokes everything the login roles held
   on the schema's tables and sequences and grants ``GRANTS`` again: a privilege removed
   from the map is gone after the next run, and no reader sees a moment without its
   grants. A table the map names but the schema does not have yet (another branch's
   migration) is skipped and granted on the run after the migration that creates it.

Why a separate owner: a table's owner may alter, drop or rewrite it whatever the grants
say, so no process that runs for long may own one. The projector used to own the schema
and migrate at start; it now only writes rows (``slaledger project --rebuild``, which swaps
tables, runs as the owner through the migration job's credentials: ``projections.rebuild``).

Roles are cluster-wide while grants are per database: ``role_names(prefix)`` gives test
databases sharing a server names of their own, and two jobs on one server take turns on
the roles (a lock on the shared catalog), so they may run at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Mapping

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection

from .migrate import upgrade

OWNER = "owner"
# Login roles, by process: who connects as each (docker-compose.yml).
LOGIN_ROLES = ("projector", "worker", "itop", "report", "tokens", "grafana")
DEFAULT_NAMES = {
    OWNER: "slaledger_owner",  # owns the schema; NOLOGIN: only the migration job becomes it
    "projector": "slaledger_projector",  # slaledger project
    "worker": "slaledger_worker",  # slaledger worker (API, web view, tokens)
    "itop": "slaledger_itop",  # slaledger itop sync
    "report": "slaledger_report",  # slaledger report monthly|schedule
    "tokens": "slaledger_tokens",  # slaledger token create|list|revoke (compose: prometheus-token)
    "grafana": "grafana_ro",  # Grafana's PostgreSQL datasource
}
# The Compose secret (a file under /run/secrets) holding each login role's password.
PASSWORD_FILES = {kind: f"db_{kind}_password" for kind in LOGIN_ROLES} | {"grafana": "grafana_db_password"}

_READ = "SELECT"
# table → privileges, per login role. Column lists restrict an UPDATE to those columns. An
# INSERT also grants USAGE on the table's own sequences (serial ids).
GRANTS: dict[str, dict[str, str]] = {
    "projector": {
        "tickets": "SELECT, INSERT, UPDATE",
        "sla_clocks": "SELECT, INSERT, DELETE",  # a ticket's clocks are replaced as a whole
        "sla_judgments": "SELECT, INSERT",  # append-only
        "event_archive": "SELECT, INSERT",  # append-only: no UPDATE, no DELETE, even for its writer
        "merkle_nodes": "SELECT, INSERT",  # append-only
        "signed_heads": "SELECT, INSERT, UPDATE (published_at, cosignatures)",  # published, cosigned, never re-signed
        "ticket_map_tickets": "SELECT, INSERT, UPDATE",  # each ticket's count and history hash
        "ticket_map_nodes": "SELECT, INSERT",  # append-only: a head adds node versions
        "ticket_map_commits": "SELECT, INSERT",  # append-only
        "projection_checkpoints": "SELECT, INSERT, UPDATE",
        "dead_letters": "SELECT, INSERT",
        "metric_totals": "SELECT, INSERT, UPDATE",
        "api_tokens": _READ,  # its /metrics takes the workers' staff tokens (#25)
        "alembic_version": _READ,  # checks the schema is the one it was built for
    },
    "worker": {
        "api_tokens": _READ,  # bearer authentication
        "tickets": _READ,  # lists
        "event_archive": _READ,  # timeline, dispute file
        "merkle_nodes": _READ,  # inclusion proofs of the dispute file
        "signed_heads": _READ,
        "ticket_map_tickets": _READ,  # completeness proof of the dispute file: the ticket's place
        "ticket_map_nodes": _READ,  # its inclusion path in the map as of the head
        "ticket_map_commits": _READ,
        "projection_checkpoints": _READ,  # the archive's head, checked by the dispute file
        "web_sessions": "SELECT, INSERT, UPDATE, DELETE",  # sign-in sessions (#25)
        "alembic_version": _READ,
    },
    "itop": {
        "itop_checkpoints": "SELECT, INSERT, UPDATE",
        "itop_tickets": "SELECT, INSERT, UPDATE",  # which iTop object each ticket comes from
        "itop_writebacks": "SELECT, INSERT, DELETE",  # a replaced deadline field forgets its old entry
        "tickets": _READ,  # which tickets are still open
        "sla_clocks": _READ,  # what it writes back
        "event_archive": _READ,  # the SLA facts it writes back
        "alembic_version": _READ,
    },
    "report": {
        "monthly_statements_sent": "SELECT, INSERT, DELETE",  # a statement sent again replaces its record
        "tickets": _READ,
        "event_archive": _READ,  # events the month's signed head does not cover yet
        "signed_heads": _READ,  # the head at the month's end
        "alembic_version": _READ,
    },
    "tokens": {
        "api_tokens": "SELECT, INSERT, UPDATE (revoked_at)",  # create, list, revoke; never rewrite a hash
        "alembic_version": _READ,
    },
    "grafana": {  # the read model only: no token, no archive envelope; read-only transactions
        "tickets": _READ,
        "sla_clocks": _READ,
        "projection_checkpoints": _READ,
        "dead_letters": _READ,
    },
}
READ_ONLY = frozenset({"grafana"})  # default_transaction_read_only = on


class RolesError(ValueError):
    """A role set-up the job cannot apply (a missing password, a bad prefix)."""


def role_names(prefix: str | None = None) -> dict[str, str]:
    """Each kind's role name: the defaults, or ``prefix`` + kind (a test database's own)."""
    if prefix is None:
        return dict(DEFAULT_NAMES)
    if not prefix.replace("_", "").isalnum() or not prefix[0].isalpha() or len(prefix) > 40:
        raise RolesError(f"role prefix {prefix!r}: letters, digits and _, starting with a letter")
    return {kind: f"{prefix}{kind}" for kind in DEFAULT_NAMES}


def scram_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802, 7677; the
    format of PostgreSQL's own ``pg_authid.rolpassword``): handed to ALTER ROLE instead of
    the password, so neither a statement log nor ``pg_stat_activity`` shows it."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", unicodedata.normalize("NFKC", password).encode(), salt, iterations)
    stored = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def provision(engine: Engine, passwords: Mapping[str, str], names: Mapping[str, str] | None = None) -> None:
    """The migration job on ``engine`` (a superuser's connection): roles, migrations as the
    owner, grants. Idempotent. ``passwords`` maps each login kind to its password."""
    names = dict(names or DEFAULT_NAMES)
    missing = [kind for kind in LOGIN_ROLES if not passwords.get(kind)]
    if missing:
        raise RolesError(f"no password for the role(s) {', '.join(missing)}")
    with engine.begin() as conn:
        _roles(conn, names, passwords)
    owner_engine = create_engine(engine.url, connect_args={"options": f"-c role={names[OWNER]}"})
    try:
        upgrade(owner_engine)
        with owner_engine.begin() as conn:
            apply_grants(conn, names)
    finally:
        owner_engine.dispose()


def _roles(conn: Connection, names: Mapping[str, str], passwords: Mapping[str, str]) -> None:
    owner, logins = _ident(names[OWNER]), [_ident(names[kind]) for kind in LOGIN_ROLES]
    # Roles are the cluster's, not the database's: two jobs (two databases of one server)
    # changing the same role at once would fail ("tuple concurrently updated"). The shared
    # catalog's lock makes them take turns, until this transaction ends; logins are not held.
    conn.execute(text("LOCK TABLE pg_catalog.pg_authid IN SHARE ROW EXCLUSIVE MODE"))
    for role, name in zip([owner, *logins], [names[OWNER], *(names[k] for k in LOGIN_ROLES)], strict=True):
        if conn.scalar(text("SELECT count(*) FROM pg_roles WHERE rolname = :n"), {"n": name}) == 0:
            conn.execute(text(f"CREATE ROLE {role}"))
    conn.execute(text(f"ALTER ROLE {owner} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"))
    for kind, role in zip(LOGIN_ROLES, logins, strict=True):
        # a verifier holds ':' (a bind parameter to text()): sent to the driver as it is
        conn.exec_driver_sql(f"ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                             f"NOBYPASSRLS NOINHERIT PASSWORD {_literal(scram_verifier(passwords[kind]))}")
        read_only = "SET default_transaction_read_only = on" if kind in READ_ONLY else \
            "RESET default_transaction_read_only"
        conn.execute(text(f"ALTER ROLE {role} {read_only}"))
    database = _ident(str(conn.scalar(text("SELECT current_database()"))))
    # nobody else connects or creates here; each login role connects, only the owner creates
    conn.execute(text(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC"))
    conn.execute(text(f"GRANT CONNECT ON DATABASE {database} TO {', '.join(logins)}"))
    conn.execute(text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
    conn.execute(text(f"GRANT USAGE, CREATE ON SCHEMA public TO {owner}"))
    conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {', '.join(logins)}"))
    # tables created before this job (by the projector or the superuser) change hands; a
    # serial's sequence follows its table
    owned = conn.execute(text(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') "
        "AND pg_get_userbyid(c.relowner) <> :owner AND NOT (c.relkind = 'S' AND EXISTS "
        "(SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))"), {"owner": names[OWNER]})
    for relname, relkind in owned.all():
        what = {"v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}.get(relkind, "TABLE")
        conn.execute(text(f"ALTER {what} {_ident(relname)} OWNER TO {owner}"))


def apply_grants(conn: Connection, names: Mapping[str, str]) -> None:
    """``GRANTS`` on the tables that exist, after revoking whatever the login roles held."""
    present = set(conn.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")))
    for kind in LOGIN_ROLES:
        role = _ident(names[kind])
        conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"))
        conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}"))
        for table, privileges in GRANTS[kind].items():
            if table not in present:
                continue
            conn.execute(text(f"GRANT {privileges} ON {_ident(table)} TO {role}"))
            if "INSERT" in privileges:
                for sequence in _sequences_of(conn, table):
                    conn.execute(text(f"GRANT USAGE ON SEQUENCE {_ident(sequence)} TO {role}"))


def _sequences_of(conn: Connection, table: str) -> list[str]:
    """The sequences a table's serial or identity columns draw from."""
    return list(conn.scalars(text(
        "SELECT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i') "
        "JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE s.relkind = 'S' AND t.relname = :table AND n.nspname = 'public'"), {"table": table}))


def _ident(name: str) -> str:
    """A quoted SQL identifier (PostgreSQL's quote_ident, always quoting)."""
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    """A quoted SQL string (standard_conforming_strings, PostgreSQL's default since 9.1)."""
    return "'" + value.replace("'", "''") + "'"
