"""The what-if and policy commands as an operator types them (#29): one command per question,
one-line errors, and a SQLite archive filled by the projector's own code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sla.events import EventType
from slaledger.cli import main
from tests.conftest import ev, filed, projected

ROOT = Path(__file__).resolve().parents[2]
DRAFTS = ROOT / "docs" / "drafts"
DEFAULT = ROOT / "sla" / "default_policy.toml"


@pytest.fixture
def archive(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'slaledger.db'}"
    events = [
        filed("2026-11-06T17:00:00+01:00", ticket_id="S-FRI", member="commune-de-blois"),
        ev(EventType.ACKNOWLEDGED, "2026-11-09T09:00:00+01:00", "S-FRI"),
        filed("2026-11-10T10:00:00+01:00", ticket_id="S-TUE", member="lycee-descartes"),
        ev(EventType.ACKNOWLEDGED, "2026-11-10T11:00:00+01:00", "S-TUE"),
    ]
    projected(url, events).dispose()
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_what_if_saturday_were_a_jour_ouvrable_one_command(archive: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "audit", "what-if", "--policy", str(DRAFTS / "saturday-ouvrable.toml"),
                         "--database", archive, "--from", "2026-11-01T00:00:00+01:00",
                         "--to", "2026-12-01T00:00:00+01:00", "--format", "json", "--by-member")
    assert code == 0, err
    doc = json.loads(out)
    assert [(c["ticket_id"], c["before"]["verdict"], c["after"]["verdict"]) for c in doc["changes"]] == [
        ("S-FRI", "met", "breached")]
    blois = next(s for s in doc["summary"] if s["member"] == "commune-de-blois")
    assert (blois["before"]["compliance"], blois["after"]["compliance"]) == (1.0, 0.0)
    code, out, _ = run(capsys, "audit", "what-if", "--policy", str(DRAFTS / "saturday-ouvrable.toml"),
                       "--database", archive, "--member", "lycee-descartes", "--from", "2026-11-01T00:00:00+01:00",
                       "--to", "2026-12-01T00:00:00+01:00")
    assert code == 0 and "0 engagement(s) dont le verdict ou l'échéance change" in out


def test_what_if_errors_are_one_line(archive: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    period = ("--from", "2026-11-01T00:00:00+01:00", "--to", "2026-12-01T00:00:00+01:00")
    cases = [
        (("--policy", str(tmp_path / "missing.toml"), "--database", archive, *period), "cannot be read"),
        (("--policy", str(DRAFTS / "no-admin-pause.toml"), "--version", "nope", "--database", archive, *period),
         "unknown policy version 'nope'"),
        (("--policy", str(DEFAULT), "--database", f"sqlite:///{tmp_path / 'none.db'}", *period), "no such SQLite"),
        (("--policy", str(DEFAULT), "--database", archive, "--format", "pdf", *period), "needs --output"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, "audit", "what-if", *argv)
        assert code == 2 and err.startswith("slaledger: error:") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "none.db").exists()


def test_policy_diff_in_french(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "diff", str(DEFAULT), str(DRAFTS / "whit-monday-worked.toml"))
    assert code == 0 and "Version convention-2026.1 modifiée :" in out and "lundi de Pentecôte férié → travaillé" in out
    code, out, _ = run(capsys, "policy", "diff", str(DEFAULT), str(DEFAULT))
    assert code == 0 and out == "Le projet ne change aucune règle.\n"


def test_policy_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "check", str(DRAFTS / "saturday-ouvrable.toml"))
    assert code == 0 and "2 version(s)" in out
    text = DEFAULT.read_text(encoding="utf-8")
    bad = {
        "typo.toml": text.replace('warning_ratio = 0.75', 'warning_ratio = 0.75\nwarnig = 1', 1),
        "cal.toml": text.replace('reading = "ouvré"', 'reading = "ouvré"\nsaturday = true', 1),
        "same.toml": text.replace('effective_from = "2026-12-01T00:00:00+01:00"',
                                  'effective_from = "2020-01-01T00:00:00+01:00"'),
        "years.toml": text.replace('effective_from = "2026-12-01T00:00:00+01:00"',
                                   'effective_from = "2036-12-01T00:00:00+01:00"'),
    }
    messages = {"typo.toml": "unknown key(s) ['warnig']", "cal.toml": "unknown key(s) ['saturday']",
                "same.toml": "take effect at the same instant",
                "years.toml": "lists non-working days up to 2035, but judges requests filed until 2036-12-01"}
    for name, content in bad.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        code, _, err = run(capsys, "policy", "check", str(path))
        assert code == 2 and err.startswith(f"slaledger: error: {path}") and messages[name] in err, err
        assert all(line.startswith("slaledger: error:") for line in err.splitlines())
