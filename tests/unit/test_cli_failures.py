"""Every command, failing on its environment (a broker that does not answer, a database that
refuses or has no tables, a bad database URL, a data directory that cannot be one), ends
with one ``slaledger: error:`` line and a non-zero exit code, never a traceback.

Commands that run forever or install signal handlers (worker, project, dev, itop sync) run
in a subprocess with a timeout, so that a hang fails the test instead of blocking it; the
others run ``main()`` in this process. Nothing here needs a broker or a database server:
the refused port 1 stands for both.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slaledger.cli import main
from slaledger.failures import describe
from slaledger.settings import Settings
from streams.kafka_tools import TopicMissing

NO_BROKER = ["--broker", "127.0.0.1:1"]
NO_DATABASE = ["--database", "postgresql+psycopg://postgres@127.0.0.1:1/x"]
BAD_URL = ["--database", "nosuchdialect://x"]
EXPLAIN = ["sla", "explain", "--kind", "incident", "--channel", "portal", "--filed-at", "2026-03-12T10:00:00+01:00"]
ITOP = ["itop", "sync", "--url", "http://127.0.0.1:1/itop", "--user", "sync", "--password", "s3cret"]
TIMEOUT = "0.5"  # SLALEDGER_BROKER_TIMEOUT: how long the start-up check waits for the broker


def assert_one_line(code: int, stderr: str, *expected: str) -> None:
    assert code != 0
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("slaledger: error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == errors[0]  # the last word, after the command's logs
    for text in expected:
        assert text in errors[0], errors[0]


# (argv, what the line must say); {tmp} is the test's directory, {file} a regular file in it
IN_PROCESS = {
    "sla explain: policy file missing": ([*EXPLAIN, "--policy", "{tmp}/missing.toml"], "missing.toml"),
    "sla explain: unknown product": ([*EXPLAIN, "--product", "Local Trus MPE"],
                                     "--product: Produit inconnu : « Local Trus MPE » (produits proches : Local Trust "
                                     "MPE)."),
    "policy holidays: years reversed": (["policy", "holidays", "--from", "2030", "--to", "2020"], "--from"),
    "topics create: no broker": (["topics", "create", *NO_BROKER], "127.0.0.1:1"),
    "audit replay: no broker": (["audit", "replay", "--source", "kafka", *NO_BROKER], "127.0.0.1:1"),
    "audit replay: database refused": (["audit", "replay", "--source", "archive", *NO_DATABASE], "***@127.0.0.1:1"),
    "audit replay: fresh data dir": (["audit", "replay", "--source", "archive", "--data-dir", "{tmp}/fresh"],
                                     "no slaledger tables"),
    "audit replay: output in a missing directory": (["audit", "replay", "-o", "{tmp}/nowhere/file.json"], "nowhere"),
    "audit replay: output is a directory": (["audit", "replay", "-o", "{tmp}"], "is a directory"),
    "audit verify: no broker": (["audit", "verify", "--source", "kafka", *NO_BROKER], "127.0.0.1:1"),
    "audit verify: database refused": (["audit", "verify", *NO_DATABASE], "refused or unreachable"),
    "audit verify: fresh data dir": (["audit", "verify", "--data-dir", "{tmp}/fresh"], "no slaledger tables"),
    "token create: database refused": (["token", "create", "--role", "agent", *NO_DATABASE], "SLALEDGER_DATABASE_URL"),
    "token create: bad database URL": (["token", "create", "--role", "agent", *BAD_URL], "database URL"),
    "token list: database refused": (["token", "list", *NO_DATABASE], "refused or unreachable"),
    "token list: data dir is a file": (["token", "list", "--data-dir", "{file}/data"], "Not a directory"),
    "token list: SQLite in a missing directory": (["token", "list", "--database", "sqlite:///{tmp}/nowhere/x.db"],
                                                 "nowhere: no such directory for the SQLite database"),
    "token revoke: database refused": (["token", "revoke", "tok_x", *NO_DATABASE], "refused or unreachable"),
    "token revoke: bad database URL": (["token", "revoke", "tok_x", *BAD_URL], "database URL"),
    "itop sync --once: no broker": ([*ITOP, "--once", "--data-dir", "{tmp}/itop", *NO_BROKER], "127.0.0.1:1"),
    "itop sync --once: database refused": ([*ITOP, "--once", *NO_DATABASE], "refused or unreachable"),
}

SUBPROCESS = {
    "worker: no broker": (["worker", "--data-dir", "{tmp}/w", *NO_BROKER], "127.0.0.1:1"),
    "worker: data dir is a file": (["worker", "--data-dir", "{file}/w"], "Not a directory"),
    "project: no broker": (["project", "--data-dir", "{tmp}/p", "--metrics-port", "0", *NO_BROKER], "127.0.0.1:1"),
    "project --rebuild: no broker": (["project", "--rebuild", "--data-dir", "{tmp}/p", *NO_BROKER], "127.0.0.1:1"),
    "project: database refused": (["project", *NO_BROKER, *NO_DATABASE], "refused or unreachable"),
    "project: data dir is a file": (["project", "--data-dir", "{file}/p", *NO_BROKER], "Not a directory"),
    "itop sync --every: no broker": ([*ITOP, "--every", "60s", "--data-dir", "{tmp}/i", *NO_BROKER], "127.0.0.1:1"),
    "dev --broker: no broker": (["dev", "--data-dir", "{tmp}/d", *NO_BROKER], "127.0.0.1:1"),
    "dev: data dir is a file": (["dev", "--data-dir", "{file}/d"], "Not a directory"),
}


def expand(argv: list[str], tmp_path: Path) -> list[str]:
    regular = tmp_path / "a-file"
    regular.write_text("not a directory")
    return [a.format(tmp=tmp_path, file=regular) for a in argv]


@pytest.mark.parametrize(("argv", "expected"), IN_PROCESS.values(), ids=IN_PROCESS.keys())
def test_one_line_in_process(argv: list[str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLALEDGER_BROKER_TIMEOUT", TIMEOUT)
    code = main(expand(argv, tmp_path))
    assert_one_line(code, capsys.readouterr().err, expected)


def run(argv: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLALEDGER_")}
    return subprocess.run([sys.executable, "-m", "slaledger.cli", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60, env={**clean, "SLALEDGER_BROKER_TIMEOUT": TIMEOUT, **env})


@pytest.mark.parametrize(("argv", "expected"), SUBPROCESS.values(), ids=SUBPROCESS.keys())
def test_one_line_from_a_long_running_command(argv: list[str], expected: str, tmp_path: Path) -> None:
    done = run(expand(argv, tmp_path), tmp_path)
    assert_one_line(done.returncode, done.stderr, expected)


@pytest.mark.parametrize("command", ["worker", "dev"])
def test_a_database_that_refuses_stops_a_worker_before_any_broker(command: str, tmp_path: Path) -> None:
    """The worker's token database (env only) is checked at start; ``dev`` checks it before it
    starts its embedded broker."""
    done = run([command, "--data-dir", str(tmp_path / "d")], tmp_path,
               SLALEDGER_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/x")
    assert_one_line(done.returncode, done.stderr, "refused or unreachable")
    assert not (tmp_path / "d" / "broker.log").exists()


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the environment's failures are turned into a line: a programming error is not hidden."""
    from slaledger import sla_cli

    def broken(_: object) -> int:
        raise KeyError("bug")

    monkeypatch.setattr(sla_cli, "cmd_policy_holidays", broken)
    with pytest.raises(KeyError):
        main(["policy", "holidays", "--from", "2026", "--to", "2026"])


def test_a_broker_without_the_topics_is_told_to_create_them() -> None:
    """``project`` or ``audit replay --source kafka`` against a broker where ``topics create``
    never ran: the broker answers, the topic is missing."""
    line, code = describe(TopicMissing("topic slaledger.ticket-events not found"),
                          Settings(broker_url="kafka://kafka:9092")) or ("", 0)
    assert code == 1 and line.startswith("topic slaledger.ticket-events not found at kafka:9092: ")
    assert "slaledger topics create" in line


def test_topics_with_another_partition_count_are_one_line() -> None:
    from streams.topics import TopicLayoutError

    line, code = describe(TopicLayoutError("slaledger.ticket-commands has 4 partitions, expected 8"),
                          Settings(broker_url="kafka://kafka:9092")) or ("", 0)
    assert code == 1 and "has 4 partitions, expected 8" in line and "--partitions" in line


def test_a_short_dev_token_is_refused_before_anything_starts(tmp_path: Path) -> None:
    done = run(["dev", "--data-dir", str(tmp_path / "d")], tmp_path, SLALEDGER_DEV_TOKEN="slt_short")
    assert_one_line(done.returncode, done.stderr, "SLALEDGER_DEV_TOKEN: 9 characters, at least 16")
    assert not (tmp_path / "d").exists()


INTERRUPTED = {
    "worker": ["worker", "--data-dir", "{tmp}/w", *NO_BROKER],
    "project": ["project", "--data-dir", "{tmp}/p", "--metrics-port", "0", *NO_BROKER],
    "itop sync --every": [*ITOP, "--every", "60s", "--data-dir", "{tmp}/i", *NO_BROKER],
    "report schedule": ["report", "schedule", "--data-dir", "{tmp}/r"],
}


@pytest.mark.parametrize("argv", INTERRUPTED.values(), ids=INTERRUPTED.keys())
def test_ctrl_c_stops_a_long_running_command_without_a_traceback(argv: list[str], tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) while the command runs, whatever it is doing (importing, waiting for its
    broker, between two passes): no traceback; one line and exit code 130, or the command's own
    clean stop (``report schedule`` handles the signal itself: exit code 0)."""
    import signal
    import time

    members = tmp_path / "members.toml"
    members.write_text('[members.m]\nname = "M"\nreferent = "m@example.org"\n')
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLALEDGER_")}
    env = {**clean, "SLALEDGER_BROKER_TIMEOUT": "120", "SLALEDGER_SMTP_HOST": "127.0.0.1",
           "SLALEDGER_SMTP_FROM": "slaledger@example.org", "SLALEDGER_MEMBERS_FILE": str(members)}
    # A terminal gives its command SIGINT at its default; a shell's background job (how a CI
    # runner may start this suite) inherits it ignored, and Python then keeps ignoring it.
    process = subprocess.Popen([sys.executable, "-m", "slaledger.cli", *expand(argv, tmp_path)], cwd=tmp_path,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(3)  # past the interpreter's start-up: any later moment must end the same way
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=60)[1]
    assert "Traceback" not in stderr, stderr[-3000:]
    if process.returncode != 0:
        assert process.returncode == 130, stderr[-3000:]
        assert stderr.strip().splitlines()[-1] == "slaledger: interrupted"


def test_a_sqlite_url_in_a_missing_directory_creates_nothing(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in --database must not answer from a new, empty database (« no token »)."""
    code = main(["token", "list", "--json", "--database", f"sqlite:///{tmp_path}/nowhere/x.db"])
    captured = capsys.readouterr()
    assert_one_line(code, captured.err, "nowhere")
    assert captured.out == "" and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(("value", "expected"), [("5pm", "is not a time of day"),
                                                 ("19:00", "is not within the support hours (09:00–18:00)")])
def test_an_evening_alert_time_that_cannot_be_one_line(value: str, expected: str, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """SLALEDGER_EVENING_ALERT_AT: not a time, or after the support closing (the list would
    never go out) — the projector does not start."""
    import threading

    from slaledger.bootstrap import attach_read_side
    from slaledger.failures import CommandFailed
    from slaledger.settings import load_policy

    monkeypatch.setenv("SLALEDGER_EVENING_ALERT_AT", value)
    if value == "5pm":
        assert_one_line(main(["token", "list", *NO_DATABASE]), capsys.readouterr().err, expected)
        return
    settings = Settings(alertmanager_url="http://127.0.0.1:1", evening_alert_at=value)
    with pytest.raises(CommandFailed, match=re.escape(expected)):
        attach_read_side(settings, None, load_policy(), threading.Event(), None)  # type: ignore[arg-type]


# --- #32 item 6: the CLI in ordinary situations --------------------------------------------------

@pytest.mark.parametrize("command", ["dev", "worker"])
def test_a_port_in_use_is_one_line_before_anything_starts(command: str, tmp_path: Path) -> None:
    """Nothing is started, and no URL or token printed as if it had been."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run([command, "--port", str(port), "--data-dir", str(tmp_path / "d"), *NO_BROKER], tmp_path)
    assert_one_line(done.returncode, done.stderr, f"port {port} on 127.0.0.1 is taken", "--port")
    assert done.stdout == "" and not (tmp_path / "d").exists()


ELSEWHERE = {
    "token list": ["token", "list"],
    "token create": ["token", "create", "--role", "agent", "--label", "alice"],
    "token revoke": ["token", "revoke", "tok_x"],
    "audit verify": ["audit", "verify"],
    "audit sign-head": ["audit", "sign-head"],
    "audit heads": ["audit", "heads"],
    "report monthly": ["report", "monthly", "--member", "commune-de-blois", "--month", "2026-11"],
}


@pytest.mark.parametrize("argv", ELSEWHERE.values(), ids=ELSEWHERE.keys())
def test_a_command_run_away_from_the_data_directory_creates_none(
        argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Run from another directory, a command that only uses the database says where it looked,
    instead of creating ``./data`` there and answering « no token » (a token created there
    would be refused by the running server)."""
    for name in ("SLALEDGER_DATA_DIR", "SLALEDGER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    assert_one_line(code, capsys.readouterr().err, f"{tmp_path / 'data' / 'slaledger.db'} does not exist",
                    "--data-dir")
    assert not (tmp_path / "data").exists()


def test_a_closed_stdout_ends_the_command_quietly(tmp_path: Path) -> None:
    """``slaledger … --json | head -c 400``: the reader went away; exit as SIGPIPE would, no
    BrokenPipeError text (a reader closed before the first write makes it certain)."""
    import signal

    read, write = os.pipe()
    os.close(read)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLALEDGER_")}
    done = subprocess.run([sys.executable, "-m", "slaledger.cli", *EXPLAIN, "--json"], stdout=write,
                          stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=60, env=clean)
    os.close(write)
    assert done.stderr == "" and done.returncode == 128 + signal.SIGPIPE


def test_report_monthly_without_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """CSV on stdout; the output file's extension otherwise (PDF for any other name)."""
    from sqlalchemy import create_engine

    from projections.migrate import create_schema

    (tmp_path / "data").mkdir()
    create_schema(create_engine(f"sqlite:///{tmp_path / 'data' / 'slaledger.db'}"))
    members = tmp_path / "members.toml"
    members.write_text('[members.commune-de-blois]\nname = "Commune de Blois"\nreferent = "dsi@blois.example"\n')
    monkeypatch.chdir(tmp_path)
    argv = ["report", "monthly", "--member", "commune-de-blois", "--month", "2026-11", "--members", str(members)]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("member,")
    for name, start in (("releve.html", b"<!doctype html>"), ("releve.json", b"{"), ("releve", b"%PDF")):
        assert main([*argv, "-o", str(tmp_path / name)]) == 0
        assert (tmp_path / name).read_bytes().lstrip()[:len(start)].lower() == start.lower()


def test_dev_keeps_one_agent_token_across_restarts(tmp_path: Path) -> None:
    """Each ``slaledger dev`` start reused to leave another live `agent dev` token: the token
    is kept in the data directory (0600) while it is live, and replaced once revoked."""
    from sqlalchemy import create_engine

    from projections.migrate import create_schema
    from projections.tokens import ensure_token, list_tokens, revoke_token
    from slaledger.worker_cli import _dev_token

    engine = create_engine(f"sqlite:///{tmp_path / 'slaledger.db'}")
    create_schema(engine)
    path = tmp_path / "dev-token"
    first = _dev_token(engine, path)
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text().strip() == first
    ensure_token(engine, first, "agent", "dev")  # what dev does with it
    assert _dev_token(engine, path) == first
    assert len([t for t in list_tokens(engine) if t["revoked_at"] is None]) == 1
    revoke_token(engine, first)
    second = _dev_token(engine, path)
    assert second != first and path.read_text().strip() == second


@pytest.mark.parametrize("argv", [
    ["report", "schedule", "--once"],
    ["report", "monthly", "--member", "commune-de-blois", "--month", "2026-11", "--send"]])
def test_statements_are_not_mailed_from_the_example_members_directory(
        argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """#32 item 7: Compose mounts infra/members.example.toml while SLALEDGER_MEMBERS_TOML is
    unset; the report profile would mail its example addresses."""
    from sqlalchemy import create_engine

    from projections.migrate import create_schema

    example = Path(__file__).resolve().parents[2] / "infra" / "members.example.toml"
    create_schema(create_engine(f"sqlite:///{tmp_path / 'slaledger.db'}"))
    for name, value in (("SMTP_HOST", "127.0.0.1"), ("SMTP_FROM", "slaledger@gip.example.org"),
                        ("MEMBERS_FILE", str(example)), ("DATA_DIR", str(tmp_path))):
        monkeypatch.setenv(f"SLALEDGER_{name}", value)
    code = main(argv)
    assert_one_line(code, capsys.readouterr().err, "is the example members directory", "SLALEDGER_MEMBERS_TOML")
