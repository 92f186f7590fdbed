"""The ``slaledger`` command line: one module a command family (``*_cli.py``, each with its
``add_parsers``), assembled here; what they share is ``cli_common``. ``main`` turns what
an operator can fix into one line and an exit code."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from sla.policy import PolicyError

from .cli_common import CliParser, UsageError
from .failures import describe


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slaledger")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    # imported here, inside main's try: a Ctrl-C while they import is one line too
    from . import (
        audit_cli,
        db_cli,
        evidence_cli,
        itop_cli,
        kafka_cli,
        report_cli,
        sla_cli,
        token_cli,
        whatif_cli,
        witness_cli,
        worker_cli,
    )

    parser = CliParser(prog="slaledger", description="Event-sourced ticketing and SLA monitor.")
    parser.add_argument("--version", action="version", version=f"slaledger {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    policy_commands = sla_cli.add_parsers(commands)  # sla explain, policy holidays
    kafka_cli.add_parsers(commands)  # topics create, kafka certs
    worker_cli.add_parsers(commands)  # worker, project
    audit_commands = audit_cli.add_parsers(commands)  # audit replay|verify
    token_cli.add_parsers(commands)  # token create|list|revoke
    itop_cli.add_parsers(commands)  # itop sync
    worker_cli.add_dev_parser(commands)  # dev
    report_cli.add_parsers(commands)  # report monthly|schedule (issue #16)
    evidence_cli.add_parsers(commands, audit_commands)  # keys, heads, proofs (#16)
    db_cli.add_parsers(commands)  # db migrate: roles and grants (#25)
    whatif_cli.add_parsers(audit_commands, policy_commands)  # audit what-if, policy diff|check (#29)
    witness_cli.add_parsers(commands)  # witness serve|vkey (#26)
    return parser


def _stdout_closed() -> bool:
    """Whether stdout's reader went away (``slaledger … --json | head -c 400``): a pipe whose
    read end is closed polls as an error. Then stdout goes to /dev/null, so that the
    interpreter's last flush at exit prints nothing either."""
    import select

    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        broken = any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError):  # no real stdout (a test's capture)
        return False
    if broken:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return broken


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Whatever it fails on that the operator can fix (input, a broker or a
    database that does not answer, a path: ``slaledger.failures``) ends as one line on
    stderr and a non-zero exit code; any other exception is a bug and keeps its traceback.
    Ctrl-C is how an operator stops a long-running command: one line, exit code 130 (the
    shell's for SIGINT), no traceback."""
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)  # inside: a Ctrl-C while it imports is one line too
        return int(args.handler(args))
    except (UsageError, PolicyError) as exc:
        print(f"slaledger: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slaledger: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            return 128 + signal.SIGPIPE  # `… | head`: quiet, as a process that SIGPIPE ends
        described = describe(exc, getattr(args, "settings", None))
        if described is None:
            raise
        line, code = described
        print(f"slaledger: error: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
