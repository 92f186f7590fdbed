"""Parsing the policy file: every mistake is named."""

from __future__ import annotations

import pytest

from sla.policy import PolicyError, parse_duration, parse_policy
from tests.unit.test_clock import TINY


def test_default_policy_encodes_article_4(policy) -> None:  # type: ignore[no-untyped-def]
    first, second = policy.versions
    for version in policy.versions:
        names = {s.name: s for s in version.slas}
        assert set(names) == {"intake", "administrative_answer", "go_live", "incident_eta", "incident_update"}
        assert names["intake"].channels == {"portal"} and names["intake"].duration_seconds == 4 * 3600
        assert not names["incident_eta"].contractual and not names["incident_update"].contractual
        assert names["go_live"].months == 1 and names["administrative_answer"].days == 7
        assert "local-trust-mpe" in version.excluded_products
        assert version.warning_ratio == 0.75
    # 2026.1 as it judged until December 2026; 2026.2 reads Article 4 exactly
    assert {s.name: s for s in first.slas}["administrative_answer"].stops_on == {"informed", "informed_with_eta",
                                                                               "resolved"}
    assert all(first.excluded_reason("local-trust-mpe", s.name, "administrative") for s in first.slas)
    assert {s.name: s for s in second.slas}["administrative_answer"].stops_on == {"answered", "resolved"}
    assert [s.name for s in second.slas if second.excluded_reason("local-trust-mpe", s.name, "incident")] == [
        "intake", "incident_eta", "incident_update"]
    assert not any(second.excluded_reason("local-trust-mpe", s.name, "administrative") for s in second.slas)
    assert second.effective_from.isoformat() == "2026-12-01T00:00:00+01:00"


@pytest.mark.parametrize(("value", "seconds"), [(2, 2.0), ("4h", 14400.0), ("30m", 1800.0), ("2s", 2.0), (0.5, 0.5)])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value, "x") == seconds


@pytest.mark.parametrize("value", [0, -1, "4 days", True, "h"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(PolicyError):
        parse_duration(value, "x")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda s: s.replace('rule = "elapsed"', 'rule = "magic"'), "is not one of"),
        (lambda s: s.replace('stops_on = ["acknowledged"]', 'stops_on = ["lunch"]'), "unknown value"),
        (lambda s: s.replace('timezone = "Europe/Paris"', 'timezone = "Mars/Olympus"'), "unknown time zone"),
        (lambda s: s.replace("duration = 2", "duration = -2"), "positive"),
        (lambda s: s.replace('effective_from = "2020-01-01T00:00:00Z"', 'effective_from = "2020-01-01"'), "UTC offset"),
        (lambda s: s.replace("warning_ratio = 0.75", "warning_ratio = 1.5"), "warning_ratio"),
        (lambda s: s + "[[versions.slas]]\nname = \"intake\"\nrule = \"elapsed\"\nduration = 1\n"
         "starts_on = [\"filed\"]\nstops_on = [\"resolved\"]\n", "unique"),
        (lambda s: s.replace('name = "intake"', 'name = "intake"\ncolour = "red"'), "unknown key"),
        (lambda s: s.replace('rule = "elapsed"', 'rule = "window"'), "missing 'calendar'"),
        (lambda s: "not toml [", "not valid TOML"),
        (lambda s: "", "at least one"),
    ],
)
def test_invalid_policies(edit, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyError, match=fragment):
        parse_policy(edit(TINY))


def test_no_version_in_force(policy) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import at

    with pytest.raises(PolicyError, match="no policy version in force"):
        policy.version_for(at("2019-01-01T00:00:00Z"))
