"""Intake (time to own) at every edge, through ``slaledger sla explain --json``.

Each row: filing instant as given by the user, expected deadline (Europe/Paris local).
"""

from __future__ import annotations

import json

import pytest

from slaledger.cli import main
from tests.conftest import at

ROWS = [
    # inside the window: filed + 4 h elapsed, both bounds included to the second
    ("2026-03-12T10:15:00+01:00", "2026-03-12T14:15:00+01:00"),
    ("2026-03-12T08:00:00+01:00", "2026-03-12T12:00:00+01:00"),
    ("2026-03-12T16:00:00+01:00", "2026-03-12T20:00:00+01:00"),
    ("2026-03-12T15:59:59+01:00", "2026-03-12T19:59:59+01:00"),
    # just outside the window
    ("2026-03-12T07:59:59+01:00", "2026-03-12T12:00:00+01:00"),
    ("2026-03-12T06:30:00+01:00", "2026-03-12T12:00:00+01:00"),
    ("2026-03-12T16:00:01+01:00", "2026-03-13T12:00:00+01:00"),
    ("2026-03-12T00:00:00+01:00", "2026-03-12T12:00:00+01:00"),
    ("2026-03-12T23:59:59+01:00", "2026-03-13T12:00:00+01:00"),
    # weekends
    ("2026-03-13T17:00:00+01:00", "2026-03-16T12:00:00+01:00"),
    ("2026-03-14T10:00:00+01:00", "2026-03-16T12:00:00+01:00"),
    ("2026-03-15T23:59:59+01:00", "2026-03-16T12:00:00+01:00"),
    ("2026-03-16T00:00:00+01:00", "2026-03-16T12:00:00+01:00"),
    # 2026 public holidays
    ("2026-01-01T10:00:00+01:00", "2026-01-02T12:00:00+01:00"),  # New Year (Thu)
    ("2025-12-31T17:00:00+01:00", "2026-01-02T12:00:00+01:00"),  # year end
    ("2026-04-03T17:00:00+02:00", "2026-04-07T12:00:00+02:00"),  # Easter Monday 6 April
    ("2026-04-06T10:00:00+02:00", "2026-04-07T12:00:00+02:00"),
    ("2026-04-30T16:30:00+02:00", "2026-05-04T12:00:00+02:00"),  # 1 May (Fri)
    ("2026-05-07T17:00:00+02:00", "2026-05-11T12:00:00+02:00"),  # 8 May (Fri)
    ("2026-05-13T17:00:00+02:00", "2026-05-15T12:00:00+02:00"),  # Ascension 14 May
    ("2026-05-22T17:00:00+02:00", "2026-05-26T12:00:00+02:00"),  # Whit Monday 25 May
    ("2026-07-13T17:00:00+02:00", "2026-07-15T12:00:00+02:00"),  # 14 July (Tue)
    ("2026-08-15T10:00:00+02:00", "2026-08-17T12:00:00+02:00"),  # 15 August (Sat)
    ("2026-11-01T10:00:00+01:00", "2026-11-02T12:00:00+01:00"),  # 1 November (Sun)
    ("2026-11-10T17:00:00+01:00", "2026-11-12T12:00:00+01:00"),  # 11 November (Wed)
    ("2026-12-24T17:00:00+01:00", "2026-12-28T12:00:00+01:00"),  # Christmas (Fri)
    ("2026-12-31T17:00:00+01:00", "2027-01-04T12:00:00+01:00"),  # New Year 2027 (Fri), year end
    # 2027 public holidays
    ("2027-03-26T17:00:00+01:00", "2027-03-30T12:00:00+02:00"),  # Easter Monday 29 March + DST 28 March
    ("2027-04-30T17:00:00+02:00", "2027-05-03T12:00:00+02:00"),  # 1 May (Sat)
    ("2027-05-05T17:00:00+02:00", "2027-05-07T12:00:00+02:00"),  # Ascension 6 May
    ("2027-05-08T10:00:00+02:00", "2027-05-10T12:00:00+02:00"),  # 8 May (Sat)
    ("2027-05-14T17:00:00+02:00", "2027-05-18T12:00:00+02:00"),  # Whit Monday 17 May
    ("2027-07-13T17:00:00+02:00", "2027-07-15T12:00:00+02:00"),  # 14 July (Wed)
    ("2027-08-15T10:00:00+02:00", "2027-08-16T12:00:00+02:00"),  # 15 August (Sun)
    ("2027-10-29T17:00:00+02:00", "2027-11-02T12:00:00+01:00"),  # 1 November (Mon) + DST 31 October
    ("2027-11-10T17:00:00+01:00", "2027-11-12T12:00:00+01:00"),  # 11 November (Thu)
    ("2027-12-24T17:00:00+01:00", "2027-12-27T12:00:00+01:00"),  # Christmas (Sat)
    ("2027-12-31T17:00:00+01:00", "2028-01-03T12:00:00+01:00"),  # New Year 2028 (Sat), year end
    # DST changes (29 March and 25 October 2026)
    ("2026-03-27T17:00:00+01:00", "2026-03-30T12:00:00+02:00"),
    ("2026-03-27T15:00:00+01:00", "2026-03-27T19:00:00+01:00"),
    ("2026-03-29T01:30:00+00:00", "2026-03-30T12:00:00+02:00"),  # inside the skipped hour's night
    ("2026-03-30T08:00:00+02:00", "2026-03-30T12:00:00+02:00"),
    ("2026-10-23T17:00:00+02:00", "2026-10-26T12:00:00+01:00"),
    ("2026-10-25T02:30:00+01:00", "2026-10-26T12:00:00+01:00"),  # the repeated hour
    ("2026-10-26T07:59:59+01:00", "2026-10-26T12:00:00+01:00"),
    # inputs given in UTC and in the "other" offset
    ("2026-03-13T16:00:00Z", "2026-03-16T12:00:00+01:00"),
    ("2026-07-15T06:00:00Z", "2026-07-15T12:00:00+02:00"),
    ("2026-07-15T05:59:59Z", "2026-07-15T12:00:00+02:00"),
    ("2026-07-15T14:00:00Z", "2026-07-15T20:00:00+02:00"),
    ("2026-07-15T14:00:01Z", "2026-07-16T12:00:00+02:00"),
    ("2026-01-15T09:00:00+02:00", "2026-01-15T12:00:00+01:00"),  # = 08:00 Paris
    ("2026-07-15T07:00:00+01:00", "2026-07-15T12:00:00+02:00"),  # = 08:00 Paris (summer)
    ("2026-07-15T16:00:00+01:00", "2026-07-16T12:00:00+02:00"),  # = 17:00 Paris
]


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code = main(["sla", "explain", "--json", *args])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)


@pytest.mark.parametrize(("filed_at", "expected"), ROWS)
def test_intake_deadline(capsys: pytest.CaptureFixture[str], filed_at: str, expected: str) -> None:
    doc = explain(capsys, "--kind", "assistance", "--channel", "portal", "--filed-at", filed_at)
    intake = [t for t in doc["targets"] if t["sla"] == "intake"]
    assert len(intake) == 1
    assert intake[0]["deadline"] == expected
    assert at(intake[0]["deadline"]) == at(expected)
    assert intake[0]["explanation"].startswith("Demande déposée le ")


def test_intake_explanation_reads_like_the_issue(capsys: pytest.CaptureFixture[str]) -> None:
    doc = explain(capsys, "--kind", "assistance", "--channel", "portal", "--filed-at", "2026-03-13T17:00:00+01:00")
    assert doc["targets"][0]["explanation"] == (
        "Demande déposée le vendredi 13 mars 2026 à 17:00, hors plage (lun.–ven. 08:00–16:00) : "
        "prise en compte due le lundi 16 mars 2026 à 12:00."
    )


def test_holiday_named_in_explanation(capsys: pytest.CaptureFixture[str]) -> None:
    doc = explain(capsys, "--kind", "incident", "--channel", "portal", "--filed-at", "2026-05-22T17:00:00+02:00")
    assert "lundi 25 mai 2026 férié : Lundi de Pentecôte" in doc["targets"][0]["explanation"]


@pytest.mark.parametrize("channel", ["phone", "email"])
def test_no_intake_clock_off_portal(capsys: pytest.CaptureFixture[str], channel: str) -> None:
    doc = explain(capsys, "--kind", "assistance", "--channel", channel, "--filed-at", "2026-03-13T17:00:00+01:00")
    assert [t["sla"] for t in doc["targets"]] == []


def test_calendar_slas(capsys: pytest.CaptureFixture[str]) -> None:
    # one calendar week = same wall-clock time across the spring DST change (167 h)
    doc = explain(capsys, "--kind", "administrative", "--channel", "email", "--filed-at", "2026-03-23T10:00:00+01:00")
    assert {t["sla"]: t["deadline"] for t in doc["targets"]} == {"administrative_answer": "2026-03-30T10:00:00+02:00"}
    doc = explain(capsys, "--kind", "administrative", "--channel", "portal", "--filed-at", "2026-10-19T10:00:00+02:00")
    assert {t["sla"]: t["deadline"] for t in doc["targets"]} == {
        "intake": "2026-10-19T14:00:00+02:00",
        "administrative_answer": "2026-10-26T10:00:00+01:00",
    }
    # one calendar month from complete elements, clamped to the month's end
    for complete, due in [
        ("2026-01-31T10:00:00+01:00", "2026-02-28T10:00:00+01:00"),
        ("2028-01-31T10:00:00+01:00", "2028-02-29T10:00:00+01:00"),
        ("2026-03-31T10:00:00+02:00", "2026-04-30T10:00:00+02:00"),
        ("2026-03-15T10:00:00+01:00", "2026-04-15T10:00:00+02:00"),
        ("2026-12-15T10:00:00+01:00", "2027-01-15T10:00:00+01:00"),
    ]:
        doc = explain(capsys, "--kind", "go_live", "--channel", "phone", "--filed-at", "2026-01-01T00:00:00+01:00",
                      "--elements-complete-at", complete)
        assert {t["sla"]: t["deadline"] for t in doc["targets"]} == {"go_live": due}, complete


def test_go_live_waits_for_elements(capsys: pytest.CaptureFixture[str]) -> None:
    doc = explain(capsys, "--kind", "go_live", "--channel", "phone", "--filed-at", "2026-01-05T10:00:00+01:00")
    (target,) = doc["targets"]
    assert target["deadline"] is None and target["status"] == "pending"
    assert "fourniture complète des éléments" in target["explanation"]


def test_incident_eta_in_support_hours(capsys: pytest.CaptureFixture[str]) -> None:
    # acknowledged Friday 17:00 before Easter: 1 h on Friday, then Tuesday 09:00–12:00
    doc = explain(capsys, "--kind", "incident", "--channel", "phone", "--filed-at", "2026-04-03T16:30:00+02:00",
                  "--acknowledged-at", "2026-04-03T17:00:00+02:00")
    targets = {t["sla"]: t for t in doc["targets"]}
    assert targets["incident_eta"]["deadline"] == "2026-04-07T12:00:00+02:00"
    assert targets["incident_eta"]["contractual"] is False
    assert targets["incident_eta"]["explanation"].startswith("Objectif interne")
    assert targets["incident_update"]["status"] == "pending"


def test_excluded_product(capsys: pytest.CaptureFixture[str]) -> None:
    doc = explain(capsys, "--kind", "incident", "--channel", "portal", "--filed-at", "2026-03-12T10:00:00+01:00",
                  "--product", "local-trust-mpe")
    assert {t["status"] for t in doc["targets"]} == {"excluded"}
    assert all(t["deadline"] is None for t in doc["targets"])
    assert "ATEXO" in doc["targets"][0]["explanation"]


@pytest.mark.parametrize(
    "args",
    [
        ["--kind", "nope", "--channel", "portal", "--filed-at", "2026-03-12T10:00:00+01:00"],
        ["--kind", "incident", "--channel", "fax", "--filed-at", "2026-03-12T10:00:00+01:00"],
        ["--kind", "incident", "--channel", "portal", "--filed-at", "2026-03-12T10:00:00"],
        ["--kind", "incident", "--channel", "portal", "--filed-at", "yesterday"],
        ["--kind", "incident", "--channel", "portal"],
        ["--kind", "go_live", "--channel", "portal", "--filed-at", "2026-03-12T10:00:00+01:00",
         "--elements-complete-at", "2026-03-11T10:00:00+01:00"],
        ["--kind", "incident", "--channel", "portal", "--filed-at", "2026-03-12T10:00:00+01:00",
         "--policy", "/nonexistent/policy.toml"],
    ],
)
def test_invalid_input_exit_2_one_line(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert main(["sla", "explain", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slaledger: error: ")


@pytest.mark.parametrize("product", ["local-trust-mpe", "Local Trust MPE", "plateforme de marchés publics"])
def test_the_readmes_product_name_is_excluded_as_its_slug_is(capsys: pytest.CaptureFixture[str], product: str) -> None:
    """#32, item 4: `--product "Local Trust MPE"` (the README's name) is the catalogue's
    local-trust-mpe, judged as a filing would be: excluded, not running."""
    doc = explain(capsys, "--kind", "assistance", "--channel", "portal", "--filed-at", "2026-03-12T10:00:00+01:00",
                  "--product", product)
    assert {t["sla"]: t["status"] for t in doc["targets"]} == {"intake": "excluded"}
