"""The iTop client against the fake iTop (contract, paging, errors), the checkpoint, the back-off."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from kafka.errors import KafkaTimeoutError
from sqlalchemy import create_engine
from structlog.testing import capture_logs

from projections.migrate import create_schema
from sla.policy import Policy
from sla.ticket import CommandType
from slaledger.itop.client import ItopClient, ItopError, endpoint_of, parse_itop_time
from slaledger.itop.mapping import Reference
from slaledger.itop.sync import (
    Checkpoint,
    CheckpointStore,
    SyncResult,
    backoff,
    parse_duration,
    parse_since,
    run_forever,
    run_once,
    sync_once,
)
from slaledger.members import EXAMPLE_FILE, directory, load_members
from tests.itop_fake import FIXTURES, FakeItop, ListPublisher

PARIS = ZoneInfo("Europe/Paris")
ALL = ("userrequest_core_get.json", "incident_core_get.json")




@pytest.fixture
def fake() -> Iterator[FakeItop]:
    with FakeItop().load(*ALL) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_schema(engine)
    return CheckpointStore(engine, "http://itop.test/webservices/rest.php")


def client(fake: FakeItop, **options: Any) -> ItopClient:
    creds = options or {"user": "sync", "password": "s3cret"}
    return ItopClient(fake.url, timeout=5, **creds)


def gets(fake: FakeItop) -> list[dict[str, Any]]:
    return [json.loads(r["json_data"]) for r in fake.requests if "json_data" in r]


def test_client_pages_through_the_changes(fake: FakeItop) -> None:
    found = list(client(fake).changed_since("UserRequest", "2026-11-01 00:00:00", page_size=2))
    assert [o.ref for o in found] == ["R-000101", "R-000103", "R-000104", "R-000105"]  # R-000102: October
    calls = gets(fake)
    assert [(c["limit"], c["page"]) for c in calls] == [(2, 1), (2, 2), (2, 3)]
    assert calls[0]["operation"] == "core/get" and calls[0]["class"] == "UserRequest"
    assert calls[0]["key"] == "SELECT UserRequest WHERE last_update >= '2026-11-01 00:00:00'"
    assert "request_type" in calls[0]["output_fields"].split(",")
    assert all(r["version"] == "1.3" and r["auth_user"] == "sync" and r["auth_pwd"] == "***" for r in fake.requests)


@pytest.mark.parametrize("page_size", [2, 5, 100])
def test_an_itop_that_ignores_paging_is_read_once(page_size: int) -> None:
    with FakeItop(paging=False).load(*ALL) as old:
        found = list(client(old).changed_since("UserRequest", None, page_size=page_size))
        assert len(found) == 5 and len(old.requests) <= 2


def test_incident_fields_are_valid_for_the_class(fake: FakeItop) -> None:
    (incident,) = client(fake).changed_since("Incident", None, page_size=10)
    assert incident.ref == "I-000201" and "request_type" not in incident.fields


def test_token_authentication() -> None:
    with FakeItop(tokens={"tok-123"}).load(*ALL) as server:
        assert len(list(client(server, token="tok-123").changed_since("Incident", None, 10))) == 1
        assert "auth_token" in server.requests[0] and "auth_user" not in server.requests[0]
        with pytest.raises(ItopError) as err:
            list(client(server, token="wrong").changed_since("Incident", None, 10))
        assert err.value.code == 1


@pytest.mark.parametrize("params, code", [
    ({}, 5),
    ({"auth_user": "sync"}, 6),
    ({"auth_user": "sync", "auth_pwd": "nope"}, 1),
    ({"auth_user": "sync", "auth_pwd": "s3cret"}, 2),
    ({"auth_user": "sync", "auth_pwd": "s3cret", "version": "1.3"}, 3),
    ({"auth_user": "sync", "auth_pwd": "s3cret", "version": "1.3", "json_data": "{nope"}, 4),
    ({"auth_user": "sync", "auth_pwd": "s3cret", "version": "9.9", "json_data": '{"operation":"core/get"}'}, 10),
    ({"auth_user": "sync", "auth_pwd": "s3cret", "version": "1.3", "json_data": '{"operation":"core/fly"}'}, 11),
    ({"auth_user": "sync", "auth_pwd": "s3cret", "version": "1.3",
      "json_data": '{"operation":"core/get","class":"UserRequest","key":"SELECT UserRequest","page":-1}'}, 13),
    ({"auth_user": "sync", "auth_pwd": "s3cret", "version": "1.3",
      "json_data": '{"operation":"core/get","class":"Incident","key":"SELECT Incident",'
                   '"output_fields":"ref,request_type"}'}, 100),
])
def test_fake_itop_follows_the_rest_contract(fake: FakeItop, params: dict[str, str], code: int) -> None:
    status, answer = fake.handle(params)
    assert status == 200 and answer is not None and answer["code"] == code and answer["message"].startswith("Error: ")


def test_nothing_found_is_objects_null(fake: FakeItop) -> None:
    expected = json.loads((FIXTURES / "core_get_empty.json").read_text())
    oql = "SELECT Incident WHERE last_update > '2030-01-01 00:00:00'"
    _status, answer = fake.handle({"auth_user": "sync", "auth_pwd": "s3cret", "version": "1.3", "json_data": json.dumps(
        {"operation": "core/get", "class": "Incident", "key": oql, "output_fields": "ref"})})
    assert answer == expected
    assert list(client(fake).changed_since("Incident", "2030-01-01 00:00:00", 10)) == []


def test_error_codes_and_transport_failures(fake: FakeItop) -> None:
    itop = client(fake)
    fake.fail_next(**{"code": json.loads((FIXTURES / "error_internal.json").read_text())["code"]})
    with pytest.raises(ItopError) as err:
        list(itop.changed_since("UserRequest", None, 10))
    assert (err.value.code, err.value.transient) == (100, True) and "INTERNAL_ERROR" in err.value.message
    fake.fail_next(http_status=503)
    with pytest.raises(ItopError, match="HTTP 503") as err:
        list(itop.changed_since("UserRequest", None, 10))
    assert err.value.transient
    fake.fail_next(http_status=200)  # an HTML page where JSON was expected (maintenance, SSO login page)
    with pytest.raises(ItopError, match="JSON") as err:
        list(itop.changed_since("UserRequest", None, 10))
    assert err.value.transient
    with pytest.raises(ItopError) as err:
        list(client(fake, user="sync", password="wrong").changed_since("UserRequest", None, 10))
    unauthorized = json.loads((FIXTURES / "error_unauthorized.json").read_text())
    assert (err.value.code, err.value.transient) == (unauthorized["code"], False)
    assert "UNAUTHORIZED" in err.value.message and "Invalid login" in err.value.message
    fake.stop()
    with pytest.raises(ItopError, match="injoignable") as err:
        list(itop.changed_since("UserRequest", None, 10))
    assert err.value.transient


def test_sync_checkpoints_and_skips_what_it_already_sent(fake: FakeItop, store: CheckpointStore) -> None:
    reference = Reference.from_file(FIXTURES / "org-map.toml")
    publisher = ListPublisher()
    first = sync_once(client(fake), publisher, store, reference, tz=PARIS, page_size=2)
    assert (first.fetched, first.unchanged, first.tickets) == (6, 0, 6)
    assert first.commands == len(publisher.sent) == 8 + 2 + 4 + 1 + 6 + 4
    assert first.watermarks == {"UserRequest": "2026-11-27 15:00:00", "Incident": "2026-11-25 10:40:00"}
    assert store.load("UserRequest").watermark == "2026-11-27 15:00:00"
    assert first.unknown_by_kind() == {"organisation": {"Mairie de Nulle-Part": ["R-000103"]},
                                       "service": {"Gestion financière": ["R-000103"]}}
    assert "Organisations inconnues" in first.summary() and "Mairie de Nulle-Part : R-000103" in first.summary()

    fake.requests.clear()
    second = sync_once(client(fake), publisher, store, reference, tz=PARIS, page_size=2)
    assert second.commands == 0 and second.fetched == second.unchanged == 2  # the overlap window, re-read
    assert gets(fake)[0]["key"] == "SELECT UserRequest WHERE last_update >= '2026-11-27 13:55:00'"

    fake.update("UserRequest", 103, status="assigned")
    fake.add_log_entry("UserRequest", 103, "2026-11-28 08:45:00", "Jeanne Martin", "44", "C'est le poste 214.")
    third = sync_once(client(fake), publisher, store, reference, tz=PARIS, page_size=2)
    assert (third.commands, third.tickets) == (5, 1)  # the whole object again, its last command is new
    assert publisher.sent[-1].type is CommandType.CUSTOMER_RESPONSE and publisher.sent[-1].ticket_id == "IT-R-000103"
    assert store.load("UserRequest").watermark == "2026-11-28 08:45:00"
    seen = store.load("UserRequest").seen
    assert list(seen) == ["103"] and seen["103"].startswith("2026-11-28 08:45:00#")  # within 65 min of it

    # A second change in the same second (same last_update) is still read.
    fake.update("UserRequest", 103, status="resolved", resolution_date="2026-11-28 08:45:00")
    fourth = sync_once(client(fake), publisher, store, reference, tz=PARIS, page_size=2)
    assert fourth.commands >= 1 and publisher.sent[-1].type is CommandType.RESOLVE


def test_first_run_since_and_overlap(fake: FakeItop, store: CheckpointStore) -> None:
    result = sync_once(client(fake), ListPublisher(), store, Reference(), tz=PARIS, since="2026-11-20 00:00:00",
                       overlap=timedelta(minutes=5), classes=("UserRequest",))
    assert result.fetched == 2 and gets(fake)[0]["key"].endswith(">= '2026-11-20 00:00:00'")
    seen = store.load("UserRequest").seen
    assert list(seen) == ["104"] and seen["104"].startswith("2026-11-27 15:00:00#")


def test_checkpoint_stays_when_the_broker_fails(fake: FakeItop, store: CheckpointStore) -> None:
    with pytest.raises(KafkaTimeoutError):
        sync_once(client(fake), ListPublisher(fail=True), store, Reference(), tz=PARIS)
    assert store.load("UserRequest") == Checkpoint()
    retried = ListPublisher()
    assert sync_once(client(fake), retried, store, Reference(), tz=PARIS).commands == len(retried.sent) == 25


def test_run_once_backs_off_on_transient_errors(fake: FakeItop, store: CheckpointStore) -> None:
    fake.fail_next(100, times=2)
    slept: list[float] = []
    with capture_logs() as logs:
        result = run_once(lambda: sync_once(client(fake), ListPublisher(), store, Reference(), tz=PARIS),
                          attempts=3, base=0.5, sleep=slept.append)
    assert result.commands == 25 and slept == [0.5, 1.0]
    retries = [e for e in logs if e["event"] == "itop sync failed, retrying"]
    assert [(e["code"], e["code_name"], e["retry_in"], e["log_level"]) for e in retries] == [
        (100, "INTERNAL_ERROR", 0.5, "warning"), (100, "INTERNAL_ERROR", 1.0, "warning")]


def test_run_once_gives_up_at_once_on_a_configuration_error(fake: FakeItop, store: CheckpointStore) -> None:
    slept: list[float] = []
    with capture_logs() as logs, pytest.raises(ItopError) as err:
        run_once(lambda: sync_once(client(fake, user="sync", password="wrong"), ListPublisher(), store, Reference(),
                                   tz=PARIS), attempts=5, sleep=slept.append)
    assert err.value.code == 1 and slept == []
    assert [(e["event"], e["log_level"], e["code_name"]) for e in logs if "failed" in e["event"]] == [
        ("itop sync failed", "error", "UNAUTHORIZED")]


def test_run_once_gives_up_after_its_attempts_when_itop_is_down(store: CheckpointStore) -> None:
    fake = FakeItop().start()
    itop = client(fake)
    fake.stop()
    slept: list[float] = []
    with pytest.raises(ItopError, match="injoignable"):
        run_once(lambda: sync_once(itop, ListPublisher(), store, Reference(), tz=PARIS), attempts=3, base=1,
                 sleep=slept.append)
    assert slept == [1, 2]


class Clock(threading.Event):
    """A stop event whose waits are recorded instead of slept."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        return self.is_set()


def test_run_forever_backs_off_exponentially_with_a_cap_and_resets() -> None:
    outcomes: list[Exception | None] = [ItopError("down", transient=True)] * 4 + [None] + [
        ItopError("Invalid login", code=1)] + [None]
    clock = Clock()

    def sync() -> SyncResult:
        outcome = outcomes.pop(0)
        if not outcomes:
            clock.set()
        if outcome is not None:
            raise outcome
        return SyncResult("http://itop.test")

    with capture_logs() as logs:
        run_forever(sync, every=60, stop=clock, base=1, cap=4)
    assert clock.waits == [1, 2, 4, 4, 60, 1, 60]
    assert [e["log_level"] for e in logs if e["event"] == "itop sync failed"] == ["warning"] * 4 + ["error"]
    assert any(e["event"] == "itop sync recovered" and e["after_failures"] == 4 for e in logs)


def test_run_forever_does_not_swallow_programming_errors() -> None:
    def broken() -> SyncResult:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_forever(broken, every=1, stop=Clock())


def test_small_parsers() -> None:
    assert [backoff(n, 1, 300) for n in (1, 2, 3, 10)] == [1, 2, 4, 300]
    assert parse_duration("60s") == 60 and parse_duration("5m") == 300 and parse_duration("2") == 2
    for bad in ("", "soon", "0s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_since("2026-11-01") == "2026-11-01 00:00:00" and parse_since(None) is None
    with pytest.raises(ValueError, match="--since"):
        parse_since("01/11/2026")
    assert endpoint_of("https://itop.example/") == "https://itop.example/webservices/rest.php"
    assert endpoint_of("https://h/itop/webservices/rest.php") == "https://h/itop/webservices/rest.php"
    with pytest.raises(ValueError, match="credentials"):
        endpoint_of("https://u:p@itop.example")
    with pytest.raises(ValueError):
        ItopClient("https://itop.example")  # no credentials at all


def test_odd_objects_are_reported_and_the_rest_synced(fake: FakeItop, store: CheckpointStore) -> None:
    """A control character in a title becomes a space (the ticket is kept); a malformed
    last_update skips that object, reported, without stopping the sync or becoming the
    watermark; a date before year 1 in UTC is unreadable, not a crash."""
    fake.update("UserRequest", 101, title="Circuit\x0bbloqué")
    fake.update("UserRequest", 103, last_update="2026-11-30T08:00:00")
    publisher = ListPublisher()
    result = sync_once(client(fake), publisher, store, Reference(), tz=PARIS, classes=("UserRequest",))
    files = {c.ticket_id: c for c in publisher.sent if c.type is CommandType.FILE}
    assert any(c.payload["subject"] == "Circuit bloqué" for c in files.values())
    assert [u.split(":")[0] for u in result.unreadable] == ["103"] and "Objets illisibles" in result.summary()
    assert len(files) == result.fetched - 1
    assert "T" not in (store.load("UserRequest").watermark or "")


def test_impossible_dates_are_unreadable_values() -> None:
    with pytest.raises(ValueError, match="not an iTop date-time"):
        parse_itop_time("0001-01-01 00:00:00", PARIS)


def test_backoff_never_overflows() -> None:
    assert backoff(1, 1.0, 300.0) == 1.0 and backoff(10_000, 1.0, 300.0) == 300.0


# --- the change log ----------------------------------------------------------------------

def test_three_status_changes_between_two_polls_become_three_facts(fake: FakeItop, store: CheckpointStore) -> None:
    publisher = ListPublisher()
    first = sync_once(client(fake), publisher, store, Reference(), tz=PARIS, classes=("UserRequest",))
    assert first.history == {"UserRequest": "read"}
    before = {c.command_id for c in publisher.sent}
    fake.transition("UserRequest", 102, "pending", "2026-11-28 10:00:00")
    fake.transition("UserRequest", 102, "assigned", "2026-11-28 14:00:00")
    fake.transition("UserRequest", 102, "pending", "2026-11-29 09:00:00")
    fake.requests.clear()
    second = sync_once(client(fake), publisher, store, Reference(), tz=PARIS, classes=("UserRequest",))
    new = [c for c in publisher.sent if c.command_id not in before]
    assert [(c.ticket_id, c.type, c.occurred_at.isoformat() if c.occurred_at else None) for c in new] == [
        ("IT-R-000102", CommandType.WAIT_FOR_CUSTOMER, "2026-11-28T09:00:00+00:00"),
        ("IT-R-000102", CommandType.CUSTOMER_RESPONSE, "2026-11-28T13:00:00+00:00"),
        ("IT-R-000102", CommandType.WAIT_FOR_CUSTOMER, "2026-11-29T08:00:00+00:00"),
    ]
    assert second.tickets == 1
    history = [c for c in gets(fake) if c["class"] == "CMDBChangeOpSetAttributeScalar"]
    assert [c["key"] for c in history] == [
        "SELECT CMDBChangeOpSetAttributeScalar WHERE objclass = 'UserRequest' AND attcode = 'status' "
        "AND objkey IN (102)"]
    assert history[0]["output_fields"] == "objclass,objkey,attcode,oldvalue,newvalue,date"
    # polled again: the same ids, nothing new for the agent
    store.save("UserRequest", Checkpoint())
    sync_once(client(fake), publisher, store, Reference(), tz=PARIS, classes=("UserRequest",))
    assert {c.command_id for c in publisher.sent} == before | {c.command_id for c in new}


def test_the_change_log_is_read_in_batches_and_pages(fake: FakeItop) -> None:
    for n in range(3):
        fake.transition("UserRequest", 104, "assigned" if n % 2 == 0 else "pending", f"2026-11-28 1{n}:00:00")
    found = client(fake).status_changes("UserRequest", ["104", "101", "103"], page_size=2)
    assert [(c.date, c.old, c.new) for c in found["104"]] == [
        ("2026-11-28 10:00:00", "new", "assigned"), ("2026-11-28 11:00:00", "assigned", "pending"),
        ("2026-11-28 12:00:00", "pending", "assigned")]
    assert found["101"] == found["103"] == []
    calls = [c for c in gets(fake) if c["class"] == "CMDBChangeOpSetAttributeScalar"]
    assert [c["page"] for c in calls] == [1, 2] and calls[0]["key"].endswith("objkey IN (101, 103, 104)")
    with pytest.raises(ValueError, match="object key"):
        client(fake).status_changes("UserRequest", ["104 OR 1=1"])


def test_the_fake_refuses_change_log_queries_it_does_not_know(fake: FakeItop) -> None:
    for oql in ("SELECT CMDBChangeOpSetAttributeScalar",
                "SELECT CMDBChangeOpSetAttributeScalar WHERE objkey IN (1)",
                "SELECT CMDBChangeOpSetAttributeScalar WHERE objclass = 'UserRequest' AND attcode = 'status' "
                "AND objkey IN ('1')"):
        _status, answer = fake.handle({"auth_user": "sync", "auth_pwd": "s3cret", "version": "1.3",
                                       "json_data": json.dumps({"operation": "core/get", "key": oql,
                                                                "class": "CMDBChangeOpSetAttributeScalar"})})
        assert answer is not None and answer["code"] == 100 and "OQL not understood" in answer["message"]


def test_without_the_right_to_read_the_change_log_the_sync_falls_back(store: CheckpointStore) -> None:
    with FakeItop(unreadable=frozenset({"CMDBChangeOpSetAttributeScalar"})).load(*ALL) as denied:
        denied.transition("UserRequest", 102, "pending", "2026-11-28 10:00:00")
        with capture_logs() as logs:
            publisher = ListPublisher()
            result = sync_once(client(denied), publisher, store, Reference(), tz=PARIS)
            store.save("UserRequest", Checkpoint())
            store.save("Incident", Checkpoint())
            again = sync_once(client(denied), ListPublisher(), store, Reference(), tz=PARIS)
        assert result.commands == again.commands == 26  # the fixtures' 25 and R-000102's pause, from its date
        assert result.history == {"UserRequest": "unavailable", "Incident": "unavailable"}
        assert "Historique iTop illisible" in result.summary()
        warned = [e for e in logs if e["event"].startswith("itop change log unavailable")]
        assert [(e["itop_class"], e["code"], e["log_level"]) for e in warned] == [
            ("UserRequest", 1, "warning"), ("Incident", 1, "warning")]  # once per class, not at every pass


def test_an_internal_error_on_the_change_log_fails_the_pass_for_a_retry(fake: FakeItop,
                                                                        store: CheckpointStore) -> None:
    """INTERNAL_ERROR may go away: the pass fails (and is retried) rather than settle for
    the snapshot's dates, which would lose transitions for good once the checkpoint moved."""
    itop = client(fake)

    def busy(*_args: Any, **_kwargs: Any) -> Any:
        raise ItopError("MySQL server has gone away", code=100, transient=True)

    itop.status_changes = busy  # type: ignore[method-assign]
    with pytest.raises(ItopError):
        sync_once(itop, ListPublisher(), store, Reference(), tz=PARIS, classes=("Incident",))
    assert store.load("Incident") == Checkpoint()  # nothing moved: the next pass reads it all again


def test_unknown_members_and_products_are_dead_lettered_with_the_reason(fake: FakeItop, store: CheckpointStore,
                                                                        policy: Policy) -> None:
    """With the members directory and the policy's catalogue, an organisation or a service that
    names neither is set aside whole (its filing, the reason with the closest names), never sent;
    the others resolve by their own iTop names, without an org map (#32, item 4)."""
    members = directory(load_members(EXAMPLE_FILE))
    reference = Reference(members=members, products=policy.products)
    publisher = ListPublisher()
    fake.update("UserRequest", 104, service_name="Parafeur")  # a typo in iTop's service
    result = sync_once(client(fake), publisher, store, reference, tz=PARIS)
    assert sorted((ref, reason) for _, reason, ref in publisher.dead) == [
        ("R-000103", "Membre inconnu : « Mairie de Nulle-Part » (aucun membre proche ; membres connus : Commune de "
                     "Blois, Lycée Descartes (Tours), Commune de Chartres, Commune de "
                     "Vierzon, Agglomération montargoise (agglo-montargoise), Lycée Pothier (Orléans) "
                     "(lycee-pothier))."),
        ("R-000104", "Produit inconnu : « Parafeur » (produits proches : Parapheur électronique (parapheur)).")]
    filings = {filing.ticket_id: filing for filing, _, _ in publisher.dead}
    assert {f.type for f in filings.values()} == {CommandType.FILE} and set(filings) == {"IT-R-000103", "IT-R-000104"}
    assert not set(filings) & {c.ticket_id for c in publisher.sent} and result.tickets == 4
    assert len(result.refused) == 2 and "Fiches refusées" in result.summary()
    filings = {c.ticket_id: c.payload for c in publisher.sent if c.type is CommandType.FILE}
    assert {(p["member"], p["product"]) for p in filings.values()} <= {
        (m, p) for m in ("commune-de-blois", "lycee-pothier", "agglo-montargoise")
        for p in ("parapheur", "ent-netocentre", "messagerie")}
