"""The offline check of a dispute file (#26 items 1, 2, 6): every tampering a member's expert
tried is refused, naming what is wrong, by ``slaledger audit check-file`` and by the
standalone ``docs/verify_dispute_file.py`` alike (one code path), and no input crashes them.

The file is a real one: the dispute log projected into PostgreSQL by the projector's own
transaction (``Projection.apply_batch``), a head signed by ``sign_head``, the file written by
``slaledger audit replay``. No broker is needed to make it.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from projections.heads import read_key_file, sign_head
from sla.events import EventType, new_event
from slaledger.cli import main
from slaledger.devdb import fresh_database
from slaledger.settings import load_policy
from tests.conftest import projected
from tests.integration.conftest import PG
from tests.integration.test_audit import dispute_log

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "verify_dispute_file.py"
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> tuple[Doc, Path]:
    """A-1's dispute file (filed, breach declared, late-typed acknowledgement that retracts
    it) against a head signed after the whole dispute log, and the operator's public key."""
    tmp = tmp_path_factory.mktemp("issued")
    assert main(["keys", "create", "--out", str(tmp / "keys")]) == 0
    with fresh_database(PG, "slaledger_t_", admin_db="test") as database:
        filed = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        running = new_event(EventType.TICKET_FILED, "R-1", occurred_at=filed, recorded_at=filed, actor="agent:alice",
                            payload={"kind": "incident", "channel": "portal", "product": "ent", "subject": "Panne",
                                     "member": "commune-de-blois"})
        engine = projected(database, [*dispute_log(), running])
        sign_head(engine, read_key_file(tmp / "keys" / "signing-key"), load_policy())
        engine.dispose()
        out = tmp / "a1.json"
        assert main(["audit", "replay", "--source", "archive", "--database", database, "--ticket", "A-1",
                     "--output", str(out)]) == 0
        # what was known at 13:30 Paris: the breach, not yet the acknowledgement typed in at 15:00
        assert main(["audit", "replay", "--source", "archive", "--database", database, "--ticket", "A-1",
                     "--as-of", "2026-03-16T12:30:00Z", "--output", str(tmp / "a1-as-of.json")]) == 0
        # an incident filed an hour ago: its clocks are still running when the file is written
        assert main(["audit", "replay", "--source", "archive", "--database", database, "--ticket", "R-1",
                     "--output", str(tmp / "r1.json")]) == 0
        # the operator's own check rebuilds the map of histories from the archive
        assert main(["audit", "verify", "--database", database]) == 0
        engine = create_engine(database)
        with engine.begin() as conn:
            conn.execute(text("UPDATE ticket_map_tickets SET event_count = 2 WHERE ticket_id = 'A-1'"))
        engine.dispose()
        assert main(["audit", "verify", "--database", database]) == 1
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


def test_the_standalone_script_needs_neither_the_database_nor_the_broker_libraries(
        issued: tuple[Doc, Path], tmp_path: Path) -> None:
    """Only ``cryptography`` and the source of ``sla/`` and ``projections/``: SQLAlchemy,
    structlog and the Kafka clients made unimportable, it still verifies the file."""
    doc, public = issued
    (tmp_path / "f.json").write_text(json.dumps(doc))
    blocked = ["sqlalchemy", "structlog", "kafka", "aiokafka", "faust", "psycopg", "alembic", "prometheus_client"]
    code = (f"import runpy, sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
            f"sys.argv = ['verify', {str(tmp_path / 'f.json')!r}, {str(public)!r}]\n"
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.startswith("OK : signature valide"), run.stdout + run.stderr


def test_an_as_of_file_is_re_folded_in_both_views(issued: tuple[Doc, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, public = issued
    doc = json.loads((public.parents[1] / "a1-as-of.json").read_text())
    assert doc["tickets"][0]["clocks"][0]["verdict"] == "breached"
    assert doc["tickets"][0]["full_log_view"][0]["verdict"] == "retracted"
    assert check(doc, public, tmp_path, capsys)[0] == 0
    doc["tickets"][0]["full_log_view"][0]["verdict"] = "breached"
    code, out = check(doc, public, tmp_path, capsys)
    assert code == 1 and "délai intake (vue du journal complet) : « verdict »" in out, out


def test_running_clocks_are_re_folded_at_the_instant_the_file_was_written(
        issued: tuple[Doc, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, public = issued
    doc = json.loads((public.parents[1] / "r1.json").read_text())
    assert {c["verdict"] for c in doc["tickets"][0]["clocks"]} & {"running", "at_risk"}, doc["tickets"][0]["clocks"]
    assert check(doc, public, tmp_path, capsys)[0] == 0


def _timeline(edit: Callable[[list[Any]], None]) -> Callable[[Doc], None]:
    def run(doc: Doc) -> None:
        edit(doc["tickets"][0]["timeline"])
    return run


def _bump_summary(doc: Doc) -> None:
    """One more « met » in the first SLA of the summary table (page 1)."""
    row = next(iter(doc["summary"].values()))
    row["met"] += 1


def _note_line(doc: Doc, number: int, value: str) -> None:
    """Rewrite line ``number`` of the head's signed note (0: origin, 1: size, 2: root)."""
    head = doc["evidence"]["head"]
    lines = head["checkpoint"].split("\n")
    lines[number] = value
    head["checkpoint"] = "\n".join(lines)


def _note_extension(doc: Doc, name: str, value: str) -> None:
    """Rewrite the value of an extension line of the head's signed note."""
    head = doc["evidence"]["head"]
    lines = head["checkpoint"].split("\n")
    number = next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
    _note_line(doc, number, f"{name} {value}")


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
    "answer flag set": (_set("tickets", 0, "timeline", 2, "answer", True), "réponse à la demande"),
    "an event's actor edited": (_set("tickets", 0, "timeline", 2, "actor", "agent:bob"), "actor"),
    "an event shown as not covered": (_set("tickets", 0, "timeline", 2, "inclusion_path", None),
                                      "sans preuve d'inclusion"),
    "the proof of another leaf": (lambda d: d["tickets"][0]["timeline"][2].__setitem__(
        "inclusion_path", d["tickets"][0]["timeline"][1]["inclusion_path"]), "preuve d'inclusion échoue"),
    "another map entry": (_set("tickets", 0, "history_proof", "count", 2), "carte signée des historiques"),
    "the ticket removed": (_set("tickets", []), "montre 0 ticket(s)"),
    "head's root edited in its note": (lambda d: _note_line(d, 2, base64.b64encode(b"\0" * 32).decode()), "signature"),
    "head's map root edited in its note": (lambda d: _note_extension(d, "ticket_map_root", "ab" * 32), "signature"),
    "head's root edited beside its note": (_set("evidence", "head", "root_hash", "00" * 32), "valeur signée"),
    "head's map root edited beside its note": (_set("evidence", "head", "ticket_map_root", "11" * 32),
                                               "valeur signée"),
    "summary edited": (lambda d: _bump_summary(d), "résumé"),
    "judged at an earlier date": (_set("generated_at", "2020-01-01T00:00:00Z"), "date du fichier modifiée"),
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


def test_an_earlier_file_nobody_signed_proves_nothing(issued: tuple[Doc, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    doc, public = issued
    forged = copy.deepcopy(doc)
    forged["evidence"]["head"]["signature"] = "AAAA"
    (tmp_path / "old.json").write_text(json.dumps(forged))
    (tmp_path / "new.json").write_text(json.dumps(doc))
    assert main(["audit", "check-file", str(tmp_path / "new.json"), "--public-key", str(public),
                 "--earlier", str(tmp_path / "old.json")]) == 1
    assert "fichier antérieur : il ne se vérifie pas" in capsys.readouterr().out
    assert main(["audit", "check-file", str(tmp_path / "new.json"), "--public-key", str(tmp_path / "none.pub")]) == 2
    assert capsys.readouterr().err.startswith("slaledger: error: fichier de clé publique")


MALFORMED: dict[str, Callable[[str], str]] = {
    "leaf index 1e400": lambda s: s.replace('"leaf_index": 3', '"leaf_index": 1e400', 1),
    "tree size 1e400": lambda s: s.replace('"tree_size": 6', '"tree_size": 1e400', 1),
    "tree size 6.0": lambda s: s.replace('"tree_size": 6', '"tree_size": 6.0', 1),
    "tree size true": lambda s: s.replace('"tree_size": 6', '"tree_size": true', 1),
    "tickets is a number": lambda s: json.dumps({**json.loads(s), "tickets": 7}),
    "an event is null": lambda s: json.dumps(_edited(json.loads(s), lambda d: d["tickets"][0]["timeline"]
                                                     .__setitem__(1, None))),
    "inclusion path not hex": lambda s: json.dumps(_edited(json.loads(s), lambda d: d["tickets"][0]["timeline"][0]
                                                           .__setitem__("inclusion_path", ["zz"]))),
    "NaN": lambda s: s.replace('"leaf_index": 3', '"leaf_index": NaN', 1),
    "a key twice": lambda s: s.replace('"leaf_index": 3', '"leaf_index": 3, "leaf_index": 4', 1),
    "not JSON": lambda s: s[: len(s) // 2],
    "a list": lambda s: "[]",
    "a checkpoint field nested too deep": lambda s: json.dumps(_edited(json.loads(s), lambda d: _note_extension(
        d, "policy_versions", "[" * 100_000))),
}


def _edited(doc: Doc, edit: Callable[[Doc], None]) -> Doc:
    edit(doc)
    return doc


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_file_gets_one_line_and_a_non_zero_exit(name: str, issued: tuple[Doc, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    doc, public = issued
    assert doc["evidence"]["head"]["tree_size"] == 6  # the dispute log's 5 events and R-1's filing
    valid = json.dumps(doc, indent=1)
    text = MALFORMED[name](valid)
    assert text != valid, name
    code, out = check(text, public, tmp_path, capsys)
    assert code == 2, (name, out)
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slaledger: error: "), (name, out)


# What the verifier does not judge (stated in docs/evidence.md): the replay's own report on
# the archive it read, the per-SLA summary, how the policy's choices are worded, the record's
# place in Kafka or the archive and its chain hash (not provable offline), the file's ids.
NOT_EVIDENCE = {("integrity",), ("summary",), ("closed_tickets_in_summary_only",), ("timezone",), ("source",),
                ("generated_at",), ("evidence", "schema"), ("evidence", "public_key_id"),
                ("evidence", "head", "head_id"), ("policy_versions", "readings"), ("policy_versions", "effective_from"),
                ("tickets", "timeline", "source"), ("tickets", "timeline", "hash"),
                ("tickets", "timeline", "known_at_as_of"), ("filters", "member"), ("filters", "from"),
                ("filters", "to"), ("tickets", "history_proof", "inclusion_path"),
                # no ticket named: a file of the tickets it shows, each still proven whole
                ("filters", "ticket")}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                               max_size=3), max_leaves=6)


@settings(max_examples=80, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_a_mutated_file_is_refused_with_a_message_or_unchanged_in_meaning(
        issued: tuple[Doc, Path], data: st.DataObject) -> None:
    """A mutation of a valid file (a value replaced, a key removed or added, a list item
    dropped) gives problems or a FileError (one line), never another exception; accepted
    only when it touched what the verifier does not judge."""
    from projections.dispute_check import FileError, check_dispute_file, read_public_key

    doc, public = issued
    key = read_public_key(str(public))
    bad = copy.deepcopy(doc)
    paths = [p for p in _paths(bad) if p]
    path = data.draw(st.sampled_from(paths))
    parent = bad
    for step in path[:-1]:
        parent = parent[step]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        new = data.draw(JSON)
        if new == parent[path[-1]] and type(new) is type(parent[path[-1]]):
            return
        parent[path[-1]] = new
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        name = data.draw(st.text(min_size=1, max_size=6))
        if name in parent:
            return
        parent[name] = data.draw(JSON)
    else:
        parent.insert(path[-1], data.draw(JSON))
    try:
        problems, _ = check_dispute_file(bad, key)
    except FileError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    if not problems:
        shape = tuple(p for p in path if isinstance(p, str))
        # a readable copy beside the checkpoint may go: the signed note stays, and it alone counts
        copy_removed = action == "delete" and shape[:2] == ("evidence", "head") and shape[2:] != ("checkpoint",)
        assert (action == "add" and isinstance(parent, dict)) or copy_removed or any(
            shape[:len(free)] == free for free in NOT_EVIDENCE), (path, action)
