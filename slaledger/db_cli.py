"""``slaledger db migrate``: the migration job, the only command that uses the database
superuser (``projections.roles``). Registered by ``cli.build_parser`` (``add_parsers``).

It connects with the superuser's URL and password (``SLALEDGER_DATABASE_URL``,
``SLALEDGER_DATABASE_PASSWORD_FILE``) and reads each login role's password from its file in
``--passwords`` (Compose secrets: ``/run/secrets/db_projector_password``, …). On SQLite (dev)
there are no roles: it only migrates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .cli_common import connection_options
from .settings import Settings


def add_parsers(commands: Any) -> None:
    db = commands.add_parser("db", help="the database: migrations, roles and grants")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    migrate = db_commands.add_parser(
        "migrate", help="as the superuser: create or update the processes' login roles, migrate the schema as its "
                        "owner role, grant each role its tables (idempotent)")
    connection_options(migrate, database="the superuser's SQLAlchemy URL (env SLALEDGER_DATABASE_URL)",
                       data_dir="where the default SQLite file lives (dev: migrate only)")
    migrate.add_argument("--passwords", metavar="DIR", default="/run/secrets",
                         help="directory of the login roles' password files, one per role: "
                              "db_projector_password, db_worker_password, db_itop_password, db_report_password, "
                              "db_tokens_password, grafana_db_password (default /run/secrets)")
    migrate.add_argument("--role-prefix", help="name the roles PREFIX + kind (owner, projector, worker, …) instead "
                                               "of slaledger_* and grafana_ro: databases sharing a server (tests)")
    migrate.set_defaults(handler=cmd_db_migrate)


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from projections.migrate import create_schema
    from projections.roles import PASSWORD_FILES, RolesError, provision, role_names

    from .bootstrap import engine_for

    try:
        settings = Settings.from_env(database_url=args.database_url, data_dir=args.data_dir)
        names = role_names(args.role_prefix)
    except (ValueError, RolesError) as exc:
        print(f"slaledger: error: {exc}", file=sys.stderr)
        return 2
    args.settings = settings  # what main() names when the database refuses
    engine = engine_for(settings)
    if engine.dialect.name != "postgresql":
        create_schema(engine)
        print("schema migrated (no roles outside PostgreSQL)")
        return 0
    passwords = {}
    for kind, name in PASSWORD_FILES.items():
        path = Path(args.passwords) / name
        try:
            passwords[kind] = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"slaledger: error: {path}: {exc.strerror}: the password of the {names[kind]} role", file=sys.stderr)
            return 2
        if len(passwords[kind]) < 16:
            print(f"slaledger: error: {path}: the password of the {names[kind]} role needs at least 16 characters",
                  file=sys.stderr)
            return 2
    provision(engine, passwords, names)
    print(f"schema migrated; roles {', '.join(names.values())} granted")
    return 0
