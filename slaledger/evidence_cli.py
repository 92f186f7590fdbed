"""Commands of the archive's evidence (#16): keys, signed tree heads, consistency proofs and
the offline check of a dispute file. Registered by ``cli.build_parser`` (``add_parsers``).

Bad input (a missing key file, a malformed head) ends with one line and exit code 2 here,
as ``cli.main`` does for its own usage errors; a check that fails exits 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from projections.heads import HeadError, SignedHead
from projections.tree import TreeError

from .cli_common import DATABASE_HELP, connection_options
from .settings import Settings

Handler = Callable[[argparse.Namespace], int]


def _one_line(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (HeadError, TreeError, ValueError) as exc:
            print(f"slaledger: error: {exc}", file=sys.stderr)
            return 2

    return run


def add_parsers(commands: Any, audit_commands: Any) -> None:
    keys = commands.add_parser("keys", help="the operator's Ed25519 key pair that signs the archive's tree heads")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="write signing-key (0600) and signing-key.pub in DIR")
    create.add_argument("--out", required=True, metavar="DIR", help="directory (keep it out of the repository)")
    create.add_argument("--origin", help="the log's name in its checkpoints (env SLALEDGER_LOG_ORIGIN; default: "
                                         "derived from SLALEDGER_PUBLIC_URL): written in signing-key.vkey")
    create.set_defaults(handler=cmd_keys_create)

    sign = audit_commands.add_parser("sign-head", help="sign the archive's tree head now (the projector "
                                                       "publishes it on the events topic)")
    connection_options(sign, database=DATABASE_HELP)
    sign.add_argument("--policy", dest="policy_file", help="policy file (TOML): its versions are signed in the head")
    sign.set_defaults(handler=cmd_sign_head)
    heads = audit_commands.add_parser("heads", help="the signed tree heads, oldest first (JSON lines)")
    connection_options(heads, database=DATABASE_HELP)
    heads.set_defaults(handler=cmd_heads)
    consistency = audit_commands.add_parser(
        "consistency", help="prove that the archive signed by one head extends the one signed by an earlier head")
    connection_options(consistency, database=DATABASE_HELP)
    for flag in ("--from", "--to"):
        consistency.add_argument(flag, dest=flag[2:] + "_head", required=True, metavar="HEAD",
                                 help="a head id, or a JSON file: a head or a dispute file carrying one")
    consistency.add_argument("--public-key", help="check both heads' signatures with this public key (PEM)")
    consistency.set_defaults(handler=cmd_consistency)
    check = audit_commands.add_parser("check-file", help="check a dispute file (JSON) offline: signature, every "
                                                         "event's inclusion proof, each ticket's whole history, the "
                                                         "header and verdicts re-folded; exit 1 naming what fails, 3 "
                                                         "when its newest events are not yet signed")
    check.add_argument("file")
    check.add_argument("--public-key", required=True, help="the operator's public key (PEM or raw)")
    check.add_argument("--earlier", metavar="FILE", help="a dispute file issued before: the same events must sit "
                                                         "at the same leaves with the same bytes")
    witness_flags(check)
    check.set_defaults(handler=cmd_check_file)
    statements = audit_commands.add_parser(
        "check-statements", help="check a member's monthly statements (JSON) offline, oldest first: each one's "
                                 "signed checkpoint and its consistency proof from the previous one's")
    statements.add_argument("files", nargs="+", metavar="FILE")
    statements.add_argument("--public-key", required=True, help="the operator's public key (PEM, raw or vkey)")
    witness_flags(statements)
    statements.set_defaults(handler=cmd_check_statements)


def witness_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--witness-key", action="append", default=[], metavar="VKEY|FILE",
                        help="a witness's cosignature verifier key (name+hash+base64, or a file holding it); repeat")
    parser.add_argument("--witnesses-required", type=int, default=None, metavar="N",
                        help="how many of the given witnesses must have cosigned the checkpoint (default: 1 when "
                             "witness keys are given, else 0)")


def _witnesses(args: argparse.Namespace) -> tuple[list[Any], int]:
    from projections.dispute_check import FileError, distinct_witnesses, witness_threshold

    from .witness_cli import read_vkey

    keys = distinct_witnesses([read_vkey(v) for v in args.witness_key])
    try:
        return keys, witness_threshold(keys, args.witnesses_required)
    except FileError as exc:
        raise HeadError(str(exc)) from None


def _engine(args: argparse.Namespace) -> Any:
    from projections.migrate import create_schema

    from .bootstrap import engine_for

    flags = {"database_url": getattr(args, "database_url", None), "data_dir": getattr(args, "data_dir", None),
             "policy_file": getattr(args, "policy_file", None)}
    settings = Settings.from_env(**flags)
    engine = engine_for(settings, existing=True)
    create_schema(engine)
    return engine, settings


def _json_file(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise HeadError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise HeadError(f"{path}: not JSON ({exc})") from None


@_one_line
def cmd_keys_create(args: argparse.Namespace) -> int:
    from projections.heads import VKEY_FILE, create_key_pair, key_id, read_key_file

    origin = args.origin or Settings.from_env().origin
    private, public = create_key_pair(args.out, origin)
    vkey = (private.parent / VKEY_FILE).read_text(encoding="ascii").strip()
    print(f"private key: {private} (mode 0600; give it to the projector as SLALEDGER_SIGNING_KEY_FILE)\n"
          f"public key:  {public} (publish it: members check dispute files with it)\n"
          f"key id:      {key_id(read_key_file(public, public=True))}\n"
          f"verifier key of the log {origin} (C2SP signed-note; witnesses and Go's sumdb/note read it):\n"
          f"             {vkey}")
    return 0


@_one_line
def cmd_sign_head(args: argparse.Namespace) -> int:
    from projections.heads import sign_head

    from .bootstrap import signing_key

    engine, settings = _engine(args)
    key = signing_key(settings)
    if key is None:
        raise HeadError("no signing key: set SLALEDGER_SIGNING_KEY_FILE (see `slaledger keys create`), or give "
                        "--data-dir of a `slaledger dev` that wrote one")
    print(json.dumps(sign_head(engine, key, settings.policy(), origin=settings.origin).to_dict(), indent=2))
    return 0


@_one_line
def cmd_heads(args: argparse.Namespace) -> int:
    from projections.heads import list_heads

    engine, _ = _engine(args)
    for head in list_heads(engine):
        print(json.dumps(head.to_dict(), sort_keys=True))
    return 0


def _head(engine: Any, ref: str) -> SignedHead:
    from projections.heads import get_head

    if ref.isdigit():
        head = get_head(engine, int(ref))
        if head is None:
            raise HeadError(f"no signed head {ref}")
        return head
    doc = _json_file(ref)
    if isinstance(doc, dict) and isinstance(doc.get("evidence"), dict):
        doc = doc["evidence"].get("head")
    return SignedHead.from_dict(doc)


@_one_line
def cmd_consistency(args: argparse.Namespace) -> int:
    from projections import merkle, tree
    from projections.heads import read_key_file

    engine, _ = _engine(args)
    old, new = _head(engine, args.from_head), _head(engine, args.to_head)
    problems = []
    if args.public_key:
        public = read_key_file(args.public_key, public=True)
        problems += [f"head {h.head_id}: the signature does not verify" for h in (old, new) if not h.verify(public)]
    if old.tree_size > new.tree_size:
        raise HeadError(f"--from signs {old.tree_size} events, more than --to ({new.tree_size}): swap them")
    proof: list[bytes] = []
    if old.tree_size:
        with engine.connect() as conn:
            proof = tree.consistency(conn, old.tree_size, new.tree_size)
        ok = merkle.verify_consistency(old.tree_size, new.tree_size, bytes.fromhex(old.root_hash),
                                       bytes.fromhex(new.root_hash), proof)
        if not ok:
            problems.append(f"the archive signed by head {new.head_id} ({new.tree_size} events) does not extend the "
                            f"one signed by head {old.head_id} ({old.tree_size} events): rewritten in between")
    print(json.dumps({"from": old.to_dict(), "to": new.to_dict(), "proof": [p.hex() for p in proof],
                      "consistent": not problems}, indent=2))
    for line in problems:
        print(f"slaledger: {line}", file=sys.stderr)
    return 1 if problems else 0


def cmd_check_file(args: argparse.Namespace) -> int:
    """The member's check, the very code of ``docs/verify_dispute_file.py`` (its messages in
    French; exit 0 verified, 1 problems, 2 unreadable file or key, 3 nothing wrong but the
    newest events were recorded after the file's signed head: not yet signed, no sign of
    tampering)."""
    from projections.dispute_check import run

    return run(args.file, args.public_key, args.earlier, args.witness_key or [], args.witnesses_required)


@_one_line
def cmd_check_statements(args: argparse.Namespace) -> int:
    from projections.heads import read_key_file
    from projections.statements import check_statements

    public = read_key_file(args.public_key, public=True)
    witnesses, required = _witnesses(args)
    problems = check_statements([(name, _json_file(name)) for name in args.files], public, witnesses, required)
    for line in problems:
        print(f"ÉCHEC : {line}")
    if problems:
        print(f"{len(problems)} problème(s) : ces relevés ne forment pas une suite signée et cohérente")
        return 1
    print(f"OK : {len(args.files)} relevé(s), signatures valides, chaque arbre prolonge celui du relevé précédent")
    return 0


def dev_signing_key(settings: Settings) -> dict[str, str]:
    """``slaledger dev`` without a configured key: a pair in the data directory (created once,
    public key at ``DATA_DIR/signing-key.pub``), so a newcomer's dispute files are signed."""
    from projections.heads import PRIVATE_FILE, create_key_pair

    if settings.signing_key_file or settings.signing_key:
        return {}
    private = Path(settings.data_dir) / PRIVATE_FILE
    if not private.exists():
        create_key_pair(settings.data_dir, settings.origin)
    return {"signing_key_file": str(private)}
