"""``slaledger token create|list|revoke``: the API's bearer tokens (their secrets are
shown once, never listed)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from service.principal import ROLES

from .cli_common import DATABASE_HELP, UsageError, command_settings, connection_options


def add_parsers(commands: Any) -> None:
    token = commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    token_create = token_commands.add_parser("create", help="create a token; its secret is printed once")
    token_create.add_argument("--role", required=True, choices=ROLES,
                              help="metrics: reads /metrics only (Prometheus)")
    token_create.add_argument("--member", help="the member of a referent")
    token_create.add_argument("--label", help="who holds it (recorded as the actor of their events)")
    provided = token_create.add_mutually_exclusive_group()
    provided.add_argument("--secret-env", metavar="VAR",
                          help="register the secret held in environment variable VAR instead of a new one "
                               "(idempotent)")
    provided.add_argument("--secret-file", metavar="FILE",
                          help="register the secret held in FILE (a Compose secret: never in an environment; "
                               "idempotent: a deployment provisions Prometheus' token this way)")
    token_revoke = token_commands.add_parser("revoke", help="revoke a token (by id or secret)")
    token_revoke.add_argument("token")
    token_list = token_commands.add_parser("list", help="every token: id, role, member, label, created, revoked "
                                                        "(never a secret)")
    for sub in (token_create, token_list):
        sub.add_argument("--json", action="store_true", help="one JSON document instead of text")
    token_list.set_defaults(handler=cmd_token_list)
    for sub in (token_create, token_revoke, token_list):
        connection_options(sub, database=DATABASE_HELP)
    token_create.set_defaults(handler=cmd_token_create)
    token_revoke.set_defaults(handler=cmd_token_revoke)


def cmd_token_create(args: argparse.Namespace) -> int:
    from projections.migrate import create_schema
    from projections.tokens import TokenError, create_token, ensure_token

    from .bootstrap import engine_for

    engine = engine_for(command_settings(args), existing=True)
    create_schema(engine)
    if args.secret_env or args.secret_file:
        where = args.secret_env or args.secret_file
        if args.secret_env:
            secret = os.environ.get(args.secret_env, "")
        else:
            secret = Path(args.secret_file).read_text(encoding="utf-8").strip()  # OSError: one line in main()
        if len(secret) < 24:
            raise UsageError(f"{where} must hold a secret of at least 24 characters")
        label = args.label or (args.secret_env or Path(args.secret_file).name)
        try:
            created = ensure_token(engine, secret, args.role, label, args.member)
        except TokenError as exc:
            raise UsageError(str(exc)) from None
        if args.json:
            print(json.dumps({"registered": created}))
        else:
            print("token registered" if created else "token already registered")
        return 0
    try:
        token_id, secret = create_token(engine, args.role, args.member, args.label)
    except TokenError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps({"token_id": token_id, "secret": secret, "role": args.role, "member": args.member}))
    else:
        print(f"token id: {token_id}\nsecret (shown once): {secret}")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from projections.migrate import create_schema
    from projections.tokens import list_tokens

    from .bootstrap import engine_for

    engine = engine_for(command_settings(args), existing=True)
    create_schema(engine)
    tokens = list_tokens(engine)
    if args.json:
        print(json.dumps(tokens, ensure_ascii=False, indent=2))
        return 0
    for t in tokens:
        state = f"revoked {t['revoked_at']}" if t["revoked_at"] else "live"
        member = f" member={t['member']}" if t["member"] else ""
        print(f"{t['token_id']}  {t['role']:<8} {t['label']}{member}  created {t['created_at']}  {state}")
    if not tokens:
        print("no token")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from projections.migrate import create_schema
    from projections.tokens import revoke_token

    from .bootstrap import engine_for

    engine = engine_for(command_settings(args), existing=True)
    create_schema(engine)
    if not revoke_token(engine, args.token):
        raise UsageError("no live token with that id or secret")
    print("token revoked")
    return 0
