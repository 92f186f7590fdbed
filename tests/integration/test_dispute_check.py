"""The offline check of a dispute file (#26 items 1, 2, 6): every tampering a member's expert
tried is refused, naming what is wrong, by ``slaledger audit check-file`` and by the
standalone ``docs/verify_dispute_file.py`` alike (one code path), and no input crashes them.

The file is a real one: the dispute log projected into PostgreSQL by the projector's own
transaction (``Projection.apply_batch``), a head signed by ``sign_head``, the file written by
``slaledger audit replay``. No broker is needed to make it.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from projections.heads import read_key_file, sign_head
from projections.migrate import create_schema
from projections.projection import Incoming, Projection
from sla.events import encode_event
from slaledger.cli import main
from slaledger.settings import load_policy
from streams.topics import EVENTS
from tests.integration.test_audit import dispute_log

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "verify_dispute_file.py"
Doc = dict[str, Any]


def project(database: str, events: list[Any], policy: Any = None) -> None:
    engine = create_engine(database)
    create_schema(engine)
    projection = Projection(policy or load_policy())
    with engine.begin() as conn:
        projection.apply_batch(conn, [Incoming(EVENTS, 0, i, encode_event(e), e.ticket_id.encode())
                                      for i, e in enumerate(events)])
    engine.dispose()


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> tuple[Doc, Path]:
    """A-1's dispute file (filed, breach declared, late-typed acknowledgement that retracts
    it) against a head signed after the whole dispute log, and the operator's public key."""
    from tests.integration.conftest import PG

    tmp = tmp_path_factory.mktemp("issued")
    assert main(["keys", "create", "--out", str(tmp / "keys")]) == 0
    name = "slaledger_t_dispute_check"
    from sqlalchemy import text

    admin = create_engine(PG + "test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        database = PG + name
        project(database, dispute_log())
        engine = create_engine(database)
        sign_head(engine, read_key_file(tmp / "keys" / "signing-key"), load_policy())
        engine.dispose()
        out = tmp / "a1.json"
        assert main(["audit", "replay", "--source", "archive", "--database", database, "--ticket", "A-1",
                     "--output", str(out)]) == 0
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return json.loads(out.read_text()), tmp / "keys" / "signing-key.pub"


def check(doc: Doc | str, public: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Both verifiers on one file: same exit code, same output; returns them."""
    path = tmp_path / "file.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    capsys.readouterr()
    code = main(["audit", "check-file", str(path), "--public-key", str(public)])
    captured = capsys.readouterr()
    script = subprocess.run([sys.executable, str(SCRIPT), str(path), str(public)], capture_output=True, text=True,
                            timeout=120)
    assert "Traceback" not in captured.err + script.stderr, script.stderr
    assert (script.returncode, script.stdout, script.stderr) == (code, captured.out, captured.err), \
        (code, captured.out, captured.err, script.returncode, script.stdout, script.stderr)
    return code, captured.out + captured.err


def test_the_file_as_issued_verifies(issued: tuple[Doc, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    doc, public = issued
    assert [e["type"] for e in doc["tickets"][0]["timeline"]] == ["ticket_filed", "sla_breached", "acknowledged"]
    code, out = check(doc, public, tmp_path, capsys)
    assert code == 0, out
    assert "OK" in out and "historique complet" in out and "verdicts recalculés" in out, out


def _timeline(edit: Callable[[list[Any]], None]) -> Callable[[Doc], None]:
    def run(doc: Doc) -> None:
        edit(doc["tickets"][0]["timeline"])
    return run


def _set(*path_value: Any) -> Callable[[Doc], None]:
    *path, value = path_value

    def run(doc: Doc) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return run


def _swap(t: list[Any]) -> None:
    t[1], t[2] = t[2], t[1]


TAMPERINGS: dict[str, tuple[Callable[[Doc], None], str]] = {
    "middle event dropped": (_timeline(lambda t: t.pop(1)), "l'historique signé du ticket A-1 compte 3"),
    "last event dropped": (_timeline(lambda t: t.pop(2)), "l'historique signé du ticket A-1 compte 3"),
    "two events swapped": (_timeline(_swap), "ordre"),
    "an event duplicated": (_timeline(lambda t: t.insert(2, copy.deepcopy(t[1]))), "deux fois"),
    "whole timeline removed": (_timeline(lambda t: t.clear()), "l'historique signé du ticket A-1 compte 3"),
    "history proof removed": (_set("tickets", 0, "history_proof", None), "complétude"),
    "filing time edited": (_set("tickets", 0, "filed_at", "2026-03-16T07:00:00Z"), "filed_at"),
    "member edited": (_set("tickets", 0, "member", "commune-de-tours"), "member"),
    "kind edited": (_set("tickets", 0, "kind", "incident"), "kind"),
    "product edited": (_set("tickets", 0, "product", "local-trust-mpe"), "product"),
    "channel edited": (_set("tickets", 0, "channel", "phone"), "channel"),
    "verdict edited": (_set("tickets", 0, "clocks", 0, "verdict", "met"), "verdict"),
    "deadline edited": (_set("tickets", 0, "clocks", 0, "deadline", "2026-03-16T15:00:00+01:00"), "deadline"),
    "explanation edited": (_set("tickets", 0, "clocks", 0, "explanation", "Délai respecté."), "explanation"),
    "a clock removed": (_set("tickets", 0, "clocks", []), "intake"),
    "quoted policy edited": (lambda d: d["policy_versions"][0].__setitem__(
        "text", d["policy_versions"][0]["text"].replace('"4h"', '"40h"')), "politique"),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_each_tampering_is_refused_naming_what_is_wrong(name: str, issued: tuple[Doc, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    doc, public = issued
    edit, says = TAMPERINGS[name]
    bad = copy.deepcopy(doc)
    edit(bad)
    code, out = check(bad, public, tmp_path, capsys)
    assert code == 1, (name, out)
    assert says in out, (name, out)


MALFORMED: dict[str, Callable[[str], str]] = {
    "leaf index 1e400": lambda s: s.replace('"leaf_index": 3', '"leaf_index": 1e400', 1),
    "tree size 1e400": lambda s: s.replace('"tree_size": 5', '"tree_size": 1e400', 1),
    "tree size 6.0": lambda s: s.replace('"tree_size": 5', '"tree_size": 5.0', 1),
    "tree size true": lambda s: s.replace('"tree_size": 5', '"tree_size": true', 1),
    "tickets is a number": lambda s: json.dumps({**json.loads(s), "tickets": 7}),
    "an event is null": lambda s: json.dumps(_edited(json.loads(s), lambda d: d["tickets"][0]["timeline"]
                                                     .__setitem__(1, None))),
    "inclusion path not hex": lambda s: json.dumps(_edited(json.loads(s), lambda d: d["tickets"][0]["timeline"][0]
                                                           .__setitem__("inclusion_path", ["zz"]))),
    "NaN": lambda s: s.replace('"leaf_index": 3', '"leaf_index": NaN', 1),
    "a key twice": lambda s: s.replace('"leaf_index": 3', '"leaf_index": 3, "leaf_index": 4', 1),
    "not JSON": lambda s: s[: len(s) // 2],
    "a list": lambda s: "[]",
}


def _edited(doc: Doc, edit: Callable[[Doc], None]) -> Doc:
    edit(doc)
    return doc


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_file_gets_one_line_and_a_non_zero_exit(name: str, issued: tuple[Doc, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    doc, public = issued
    text = MALFORMED[name](json.dumps(doc, indent=1).replace('": ', '": '))
    code, out = check(text, public, tmp_path, capsys)
    assert code == 2, (name, out)
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slaledger: error: "), (name, out)
