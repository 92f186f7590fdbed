"""``slaledger witness``: a C2SP ``tlog-witness`` a member or a third party runs (#26).

``witness serve`` answers ``POST /add-checkpoint`` (``projections.witness``) and nothing
else: the request is authenticated by the log's signature on the checkpoint, as the
protocol defines it, so the route needs no token; every other path is 404. ``witness vkey``
prints the witness's cosignature verifier key, which the operator puts in
``SLALEDGER_WITNESSES`` and members give to ``audit check-file --witness-key``.

The witness key is an Ed25519 private key (``slaledger keys create --out DIR`` writes one);
its name (``--name``) is part of its verifier key. Bad input ends in one line, exit 2.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from typing import Any

import structlog

from projections.checkpoint import NoteError, VerifierKey
from projections.heads import HeadError, read_key_file

from .logs import configure_logging

log = structlog.get_logger(__name__)
MAX_BODY = 64 * 1024  # a request is a few hundred bytes


def add_parsers(commands: Any) -> None:
    witness = commands.add_parser("witness", help="a C2SP tlog-witness: cosigns a log's checkpoints only when they "
                                                  "extend the last one it cosigned (split views refused)")
    sub = witness.add_subparsers(dest="witness_command", required=True)
    serve = sub.add_parser("serve", help="answer POST /add-checkpoint")
    serve.add_argument("--log-key", action="append", required=True, metavar="VKEY|FILE",
                       help="a log's verifier key (name+hash+base64, e.g. the operator's signing-key.vkey); repeat")
    serve.add_argument("--state", required=True, metavar="FILE", help="SQLite file of the last checkpoint cosigned "
                                                                      "per log (created if absent)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    vkey = sub.add_parser("vkey", help="print the witness's cosignature verifier key")
    for parser in (serve, vkey):
        parser.add_argument("--key", required=True, metavar="FILE", help="the witness's Ed25519 private key (PEM)")
        parser.add_argument("--name", required=True, help="the witness's name, e.g. witness.example.org/w1")
    serve.set_defaults(handler=cmd_serve)
    vkey.set_defaults(handler=cmd_vkey)


def read_vkey(value: str) -> VerifierKey:
    """A verifier key given as itself or as a file holding it (one line): the verifier's own
    reading (``dispute_check.read_witness_key``), its error as the CLI's."""
    from projections.dispute_check import FileError, read_witness_key

    try:
        return read_witness_key(value)
    except FileError as exc:
        raise HeadError(str(exc)) from None


def _witness(args: argparse.Namespace, logs: list[VerifierKey] | None = None) -> Any:
    from projections.witness import Witness

    try:
        return Witness(args.state if logs is not None else ":memory:", args.name, read_key_file(args.key), logs or [])
    except NoteError as exc:
        raise HeadError(str(exc)) from None
    except sqlite3.Error as exc:
        raise HeadError(f"witness state {args.state}: {exc}") from None


def _fail(exc: Exception) -> int:
    print(f"slaledger: error: {exc}", file=sys.stderr)
    return 2


def cmd_vkey(args: argparse.Namespace) -> int:
    try:
        witness = _witness(args)
    except HeadError as exc:
        return _fail(exc)
    print(witness.vkey())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    configure_logging("json", "info")
    try:
        witness = _witness(args, [read_vkey(v) for v in args.log_key])
    except HeadError as exc:
        return _fail(exc)

    async def add_checkpoint(request: web.Request) -> web.Response:
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return web.Response(status=413, text="request too large\n")
        answer = witness.add_checkpoint(body)
        return web.Response(status=answer.status, body=answer.body.encode(), content_type=answer.content_type
                            .split(";")[0], charset="utf-8" if "charset" in answer.content_type else None)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/add-checkpoint", add_checkpoint)
    log.info("witness serving", name=args.name, vkey=witness.vkey(), logs=sorted(witness.logs),
             address=f"{args.host}:{args.port}")
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    witness.close()
    return 0
