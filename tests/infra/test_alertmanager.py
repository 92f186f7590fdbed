"""Alertmanager's configuration: generated from the SLA policy's support calendar and the
deployment's environment (as docker-compose.yml's ``alertmanager-config`` job sets it from
infra/env.example), checked with amtool, and run in the real Alertmanager to show that ticket
e-mails are held outside support hours while pages go out at any hour, and that the evening
list of a request filed at 15:30 is mailed before 18:00."""

from __future__ import annotations

import functools
import importlib.util
import re
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from sla.policy import Policy
from slaledger.brokers.process import free_port
from tests.conftest import system_tool
from tests.integration.conftest import api, wait_for

ROOT = Path(__file__).resolve().parents[2]
AM_DIR = ROOT / "infra" / "alertmanager"
RULES = sorted((ROOT / "infra" / "prometheus" / "rules").glob("*.rules.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"


@functools.cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("am_generate", AM_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def deployment_env() -> dict[str, str]:
    """The environment of compose's ``alertmanager-config`` job, with infra/env.example's values."""
    from tests.infra.test_configs import env_example, interpolate

    compose = yaml.safe_load(interpolate((ROOT / "docker-compose.yml").read_text(), env_example()))
    return {k: str(v) for k, v in compose["services"]["alertmanager-config"]["environment"].items()}


def generate(out: Path, policy: Policy | None = None, members: dict[str, list[str]] | None = None,
             **env: str) -> Path:
    module = generator()
    return module.write(out, module.Deployment.from_env({**deployment_env(), **env}), policy=policy,
                        members=members)


@pytest.fixture(scope="module")
def ALERTMANAGER(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("alertmanager"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def amtool() -> str:
    return system_tool("amtool", package="prometheus-alertmanager")


# --- generated, and from the policy ----------------------------------------------------------

def test_the_deployments_values_come_from_the_environment(ALERTMANAGER: Path) -> None:
    """Compose's values are in the configuration; the generator holds none of them."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    env = deployment_env()
    assert config["global"]["smtp_smarthost"] == "smtp.example.org:587"
    assert config["global"]["smtp_auth_password_file"] == "/run/secrets/smtp_password"
    assert config["global"]["smtp_require_tls"] is True
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["support-team"]["email_configs"][0]["to"] == env["SLALEDGER_SUPPORT_EMAIL"]
    paging = receivers["on-call"]["webhook_configs"][0]
    assert paging["url"] == env["SLALEDGER_PAGING_URL"]
    assert paging["http_config"]["authorization"]["credentials_file"] == "/run/secrets/oncall_token"
    switch = receivers["deadmans-switch"]["webhook_configs"][0]
    assert switch["url"] == env["SLALEDGER_DEADMANS_SWITCH_URL"]
    assert switch["http_config"]["authorization"]["credentials_file"] == "/run/secrets/deadmans_switch_token"
    runbook = (ALERTMANAGER.parent / "templates" / "deployment.tmpl").read_text()
    assert '{{ define "slaledger.runbook" }}' + env["SLALEDGER_RUNBOOK_URL"] + "{{ end }}" in runbook
    source = (AM_DIR / "generate.py").read_text()
    assert not re.search(r"example\.org|/run/secrets|https?://", source.split('"""', 2)[2])


@pytest.mark.parametrize(("env", "error"), [
    ({"SLALEDGER_SUPPORT_EMAIL": ""}, "SLALEDGER_SUPPORT_EMAIL is not set"),
    ({"SLALEDGER_PAGING_URL": "https://user:secret@pager.example/x"}, "SLALEDGER_PAGING_URL"),
    ({"SLALEDGER_RUNBOOK_URL": "runbook.md"}, "SLALEDGER_RUNBOOK_URL"),
    ({"SLALEDGER_SMTP_SECURITY": "tls"}, "SLALEDGER_SMTP_SECURITY"),
    ({"SLALEDGER_SMTP_SECURITY": "ssl", "SLALEDGER_SMTP_PORT": "2465"}, "needs SLALEDGER_SMTP_PORT 465"),
])
def test_a_missing_or_bad_value_fails_the_job_with_one_line(tmp_path: Path, env: dict[str, str], error: str) -> None:
    result = subprocess.run([sys.executable, str(AM_DIR / "generate.py"), "--out", str(tmp_path)],
                            env={**deployment_env(), **env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2 and error in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert "secret" not in result.stderr
    assert not (tmp_path / "alertmanager.yml").exists()


def test_the_job_writes_the_configuration_amtool_reads(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(AM_DIR / "generate.py"), "--out", str(tmp_path)],
                            env={**deployment_env(), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert run(amtool(), "check-config", str(tmp_path / "alertmanager.yml")).returncode == 0


def test_holidays_and_support_hours_are_the_policys(policy: Policy, ALERTMANAGER: Path) -> None:
    """Every holiday the policy's support calendar lists (Easter Monday included) is a muted
    date, and no other date is."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    intervals = {i["name"]: i["time_intervals"] for i in config["time_intervals"]}
    support = policy.versions[-1].calendars["support"]
    months = generator().MONTHS
    muted = set()
    for entry in intervals["public-holidays"]:
        assert entry["location"] == "Europe/Paris"
        for span in entry["years"]:
            first, _, last = span.partition(":")
            for year in range(int(first), int(last or first) + 1):
                muted.add(datetime(year, months.index(entry["months"][0]) + 1, int(entry["days_of_month"][0])).date())
    assert muted == set(support.holidays.days)
    assert datetime(2026, 4, 6).date() in muted  # Lundi de Pâques, computed by no Alertmanager
    assert intervals["support-hours"] == [{"times": [{"start_time": "09:00", "end_time": "18:00"}],
                                           "weekdays": ["monday:friday"], "location": "Europe/Paris"}]


# --- amtool ------------------------------------------------------------------------------------

def test_configuration_is_valid(ALERTMANAGER: Path) -> None:
    result = run(amtool(), "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=SLAErrorBudgetBurnFast", "severity=page", "sla=intake"], "on-call"),
    (["alertname=SlaledgerWorkerDown", "severity=page", "job=slaledger-worker"], "on-call"),
    (["alertname=SLABreachedTicketsOpen", "severity=ticket", "kind=incident"], "support-team"),
    (["alertname=SLATicketBreached", "severity=ticket", "ticket_id=SL-2345678923", "sla=intake",
      "member=commune-de-blois"], "support-team"),
    (["alertname=SomethingUnlabelled"], "support-team"),
    (["alertname=Watchdog", "severity=none"], "deadmans-switch"),
    (["alertname=AlertmanagerNotificationsFailing", "severity=page", "integration=email"], "on-call"),
    (["alertname=SLADueBeforeNextOpening", "severity=ticket"], "support-team-evening"),
])
def test_alert_routing(labels: list[str], receiver: str, ALERTMANAGER: Path) -> None:
    result = run(amtool(), "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                 f"--verify.receivers={receiver}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr


def test_at_risk_is_inhibited_by_the_same_tickets_breach_only(ALERTMANAGER: Path) -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    rule = next(r for r in config["inhibit_rules"] if r["target_matchers"] == ['alertname="SLATicketAtRisk"'])
    assert rule["source_matchers"] == ['alertname="SLATicketBreached"']
    assert rule["equal"] == ["ticket_id", "sla"]
    assert all(r.get("equal") for r in config["inhibit_rules"])


def test_aggregates_are_muted_while_per_ticket_alerts_of_their_kind_fire(ALERTMANAGER: Path) -> None:
    """No duplicate mails: the per-ticket alerts name the ticket, the aggregates are their fallback."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    by_kind = [(r["source_matchers"][0], r["target_matchers"][0]) for r in config["inhibit_rules"]
               if r["equal"] == ["kind"]]
    assert ('alertname="SLATicketBreached"', 'alertname="SLABreachedTicketsOpen"') in by_kind
    assert ('alertname=~"SLATicketAtRisk|SLATicketBreached"', 'alertname="SLATicketsAtRisk"') in by_kind


def routes(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = [config["route"]]
    while stack:
        route = stack.pop()
        yield route
        stack.extend(route.get("routes", []))


def test_ticket_mails_are_held_outside_support_hours_and_pages_never(ALERTMANAGER: Path) -> None:
    """The routes amtool picks: every route of a ticket e-mail is active in support hours and
    muted on holidays; no route of a page is."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    by_receiver: dict[str, list[dict[str, Any]]] = {}
    for route in routes(config):
        by_receiver.setdefault(route["receiver"], []).append(route)
    leaves = [r for r in routes(config) if not r.get("routes")]
    catch_all = config["route"]["routes"][-1]  # an alert without a severity: held too
    assert catch_all["receiver"] == "support-team" and "matchers" not in catch_all
    for route in leaves:
        if route["receiver"] in ("on-call", "deadmans-switch"):
            assert "active_time_intervals" not in route and "mute_time_intervals" not in route
        else:
            assert route["active_time_intervals"] == ["support-hours"], route
            assert route["mute_time_intervals"] == ["public-holidays"], route


def test_a_member_with_contacts_gets_its_own_mails_and_the_support_team_too(tmp_path: Path, policy: Policy) -> None:
    path = generate(tmp_path, policy, {"commune-de-blois": ["referent@blois.example", "dsi@blois.example"]})
    text, config = path.read_text(), str(path)
    assert run(amtool(), "check-config", config).returncode == 0
    ticket = ["alertname=SLATicketBreached", "severity=ticket", "ticket_id=SL-2345678923", "sla=intake"]
    mine = run(amtool(), "config", "routes", "test", f"--config.file={config}",
               "--verify.receivers=member-commune-de-blois,support-team", *ticket, "member=commune-de-blois")
    assert mine.returncode == 0, mine.stdout + mine.stderr
    other = run(amtool(), "config", "routes", "test", f"--config.file={config}", "--verify.receivers=support-team",
                *ticket, "member=commune-de-tours")
    assert other.returncode == 0, other.stdout + other.stderr
    receivers = {r["name"]: r for r in yaml.safe_load(text)["receivers"]}
    assert receivers["member-commune-de-blois"]["email_configs"][0]["to"] == "referent@blois.example, dsi@blois.example"


# --- every alert: a `for:`, and a runbook section ------------------------------------------------

def anchors(markdown: str) -> set[str]:
    """GitHub/GitLab heading anchors."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in markdown.splitlines() if line.startswith("#")}


def test_every_alert_has_a_for_and_a_runbook_section() -> None:
    from projections.alerts import ALERT_NAMES, DUE_BEFORE_OPENING

    known = anchors(RUNBOOK.read_text())
    rules = [r for f in RULES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"] if "alert" in r]
    assert rules
    for rule in rules:
        assert "for" in rule, rule["alert"]
        anchor = rule["annotations"]["runbook"]
        assert anchor == rule["alert"].lower() and anchor in known, rule["alert"]
    # The alerts the projector pushes (projections.alerts) have theirs too.
    for name in [*ALERT_NAMES.values(), DUE_BEFORE_OPENING]:
        assert name.lower() in known, name


# --- the real Alertmanager ---------------------------------------------------------------------

class Sink:
    """Where the Alertmanager under test delivers: an SMTP server keeping every message and an
    HTTP server keeping every page (the on-call webhook)."""

    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []
        self.pages: list[bytes] = []
        sink = self

        class Smtp(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"220 sink\r\n")
                data: list[bytes] | None = None
                while line := self.rfile.readline():
                    if data is not None:
                        if line.rstrip(b"\r\n") == b".":
                            sink.mails.append(message_from_bytes(b"".join(data), policy=default))  # type: ignore[arg-type]
                            data = None
                            self.wfile.write(b"250 kept\r\n")
                        else:
                            data.append(line[1:] if line.startswith(b"..") else line)
                        continue
                    verb = line[:4].upper()
                    if verb == b"DATA":
                        data = []
                        self.wfile.write(b"354 go on\r\n")
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:  # EHLO (no STARTTLS, no AUTH offered), MAIL, RCPT, RSET, NOOP
                        self.wfile.write(b"250 ok\r\n")

        class Pages(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.pages.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.smtp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Smtp)
        self.http = HTTPServer(("127.0.0.1", 0), Pages)
        for server in (self.smtp, self.http):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in (self.smtp, self.http):
            server.shutdown()
            server.server_close()


def location_at(now: datetime, hour: int) -> str:
    """A fixed-offset zone where ``now`` is ``hour``:xx (Etc/GMT's signs are inverted)."""
    offset = (hour - now.hour) % 24
    offset = offset - 24 if offset > 14 else offset
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"


def night_location(now: datetime) -> str:
    """A fixed-offset zone where ``now`` is 03:xx: outside support hours whatever the day."""
    return location_at(now, 3)


def reachable(url: str) -> bool:
    try:
        return api("GET", url, timeout=2)[0] == 200
    except OSError:
        return False


TICKET = {"labels": {"alertname": "SLATicketBreached", "severity": "ticket", "ticket_id": "SL-2345678923",
                     "sla": "intake", "member": "commune-de-blois", "kind": "incident"},
          "annotations": {"summary": "SL-2345678923 (commune-de-blois) : intake dépassé",
                          "description": "Demande déposée le lundi …",
                          "link": "https://slaledger.example.org/tickets/SL-2345678923",
                          "runbook": "slaticketbreached"}}
PAGE = {"labels": {"alertname": "SlaledgerWorkerDown", "severity": "page", "job": "slaledger-worker"},
        "annotations": {"summary": "Worker slaledger injoignable"}}


def deliver(tmp_path: Path, adapt: Callable[[dict[str, Any]], None] = lambda config: None,
            alerts: list[dict[str, Any]] | None = None) -> Sink:
    """The generated configuration in the real Alertmanager, its deliveries pointed at a
    ``Sink`` (plain SMTP on loopback, through the generator's own settings) and its group
    waits shortened, changed by ``adapt``: sends ``alerts`` (one ticket alert and one page by
    default), waits for the page (if any) and several flushes of the e-mail groups, and
    returns what was delivered."""
    binary = system_tool("prometheus-alertmanager", package="prometheus-alertmanager")
    sink = Sink()
    (tmp_path / "secret").write_text("x")
    path = generate(tmp_path / "config", SLALEDGER_SMTP_HOST="127.0.0.1",
                    SLALEDGER_SMTP_PORT=str(sink.smtp.server_address[1]), SLALEDGER_SMTP_SECURITY="none",
                    SLALEDGER_SMTP_PASSWORD_FILE=str(tmp_path / "secret"),
                    SLALEDGER_PAGING_URL=f"http://127.0.0.1:{sink.http.server_port}/v1/alerts",
                    SLALEDGER_PAGING_TOKEN_FILE=str(tmp_path / "secret"),
                    SLALEDGER_DEADMANS_SWITCH_TOKEN_FILE=str(tmp_path / "secret"))
    config = yaml.safe_load(path.read_text())
    for route in routes(config):
        route["group_wait"] = "1s"
    adapt(config)
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([binary, f"--config.file={path}",
                                f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--cluster.listen-address="], stdout=subprocess.DEVNULL,
                               stderr=(tmp_path / "alertmanager.log").open("wb"))
    try:
        wait_for(lambda: process.poll() is None and reachable(f"{url}/-/ready"), 30, what="alertmanager ready")
        now = datetime.now(UTC)
        sent = [dict(a, startsAt=now.isoformat(), endsAt=(now + timedelta(minutes=5)).isoformat())
                for a in (alerts if alerts is not None else [TICKET, PAGE])]
        status, _ = api("POST", f"{url}/api/v2/alerts", sent)
        assert status == 200
        if any(a["labels"].get("severity") == "page" for a in sent):
            wait_for(lambda: sink.pages, 30, what="the page delivered")
        time.sleep(4)  # several flushes of the e-mail groups (group_wait 1s)
        return sink
    finally:
        process.terminate()
        process.wait(timeout=20)
        sink.close()


def test_at_night_the_ticket_mail_is_held_and_the_page_delivered(tmp_path: Path) -> None:
    """The committed intervals with the clock moved to 03:xx (their zone replaced)."""
    location = night_location(datetime.now(UTC))

    def at_night(config: dict[str, Any]) -> None:
        for interval in config["time_intervals"]:
            for entry in interval["time_intervals"]:
                entry["location"] = location

    sink = deliver(tmp_path, at_night)
    assert sink.pages and not sink.mails


def test_the_mail_is_french_and_links_to_the_ticket_and_its_runbook(tmp_path: Path) -> None:
    def always(config: dict[str, Any]) -> None:
        for route in routes(config):
            route.pop("active_time_intervals", None)
            route.pop("mute_time_intervals", None)

    sink = deliver(tmp_path, always)
    assert len(sink.mails) == 1
    mail = sink.mails[0]
    assert mail["To"] == deployment_env()["SLALEDGER_SUPPORT_EMAIL"]
    assert mail["Subject"].startswith("[slaledger] 1 alerte(s) : SL-2345678923 (commune-de-blois) : intake dépassé")
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert '<a href="https://slaledger.example.org/tickets/SL-2345678923">Ouvrir la demande</a>' in html
    assert "Que faire (procédure)" in html and 'lang="fr"' in html
    assert "Demande : https://slaledger.example.org/tickets/SL-2345678923" in text
    runbook = deployment_env()["SLALEDGER_RUNBOOK_URL"]
    assert f"Que faire : {runbook}#slaticketbreached" in text
    assert f'<a href="{runbook}#slaticketbreached">Que faire (procédure)</a>' in html


def test_now_in_paris_the_ticket_mail_goes_out_only_in_support_hours(tmp_path: Path, policy: Policy) -> None:
    """The committed intervals at the real time: whether the e-mail goes out must agree with
    the policy's support calendar (run in and out of hours, the test checks both over a week)."""
    support = policy.versions[-1].calendars["support"]
    now = datetime.now(ZoneInfo("Europe/Paris"))
    margin = timedelta(minutes=1)
    if any(abs(now - now.replace(hour=h, minute=0, second=0, microsecond=0)) < margin for h in (9, 18)):
        time.sleep(2 * margin.total_seconds())  # never straddle an opening or a closing
        now = datetime.now(ZoneInfo("Europe/Paris"))
    open_now = (now.weekday() in support.weekdays and not support.is_holiday(now.date())
                and support.open_at <= now.time() < support.close_at)
    sink = deliver(tmp_path)
    assert sink.pages
    assert bool(sink.mails) == open_now, now.isoformat()


# --- before the team leaves ------------------------------------------------------------------

def test_a_request_filed_at_1530_is_mailed_before_1800(tmp_path: Path, policy: Policy) -> None:
    """A portal request filed at 15:30 is due at 19:30, its at-risk point after the 18:00
    closing: no per-ticket alert would reach anyone before the next morning. The evening alert
    lists it from 17:30, and the real Alertmanager, with the support hours of the policy's
    calendar, mails it at once. Alertmanager reads the real clock: the intervals' zone is moved
    so that now reads 17:xx there, on a day made a working day (the support hours and the route
    are the generated ones)."""
    from sqlalchemy import create_engine

    from projections.alerts import DUE_BEFORE_OPENING, due_before_opening, ticket_alerts
    from projections.migrate import create_schema
    from projections.projection import Incoming, Projection
    from sla import french
    from sla.events import EventType, encode_event, new_event
    from streams.topics import EVENTS

    support = policy.versions[-1].calendars["support"]
    day = date.today() + timedelta(days=30)  # in the future: the projection judges no clock yet
    while not (day.weekday() == 1 and support.is_working_day(day)):  # a Tuesday
        day += timedelta(days=1)
    filed_at = support.at(day, wall(15, 30))
    engine = create_engine(f"sqlite:///{tmp_path / 'slaledger.db'}")
    create_schema(engine)
    filed = new_event(EventType.TICKET_FILED, "EVENING-1", occurred_at=filed_at, recorded_at=filed_at, actor="test",
                      payload={"kind": "assistance", "channel": "portal", "member": "commune-de-blois",
                               "product": "ent", "subject": "Accès"})
    with engine.begin() as conn:
        Projection(policy).apply_batch(conn, [Incoming(EVENTS, 0, 0, encode_event(filed))])
    url, ttl, alert_at = "https://slaledger.example.org/tickets/{ticket_id}", timedelta(minutes=30), wall(17, 30)
    closing = support.at(day, support.close_at)
    assert ticket_alerts(engine, closing - timedelta(seconds=1), url, ttl, policy) == []  # the gap
    assert due_before_opening(engine, support.at(day, wall(17, 29)), url, ttl, policy, alert_at) == []
    saturday = support.at(day + timedelta(days=4), wall(17, 45))
    assert due_before_opening(engine, saturday, url, ttl, policy, alert_at) == []
    (evening,) = due_before_opening(engine, support.at(day, wall(17, 30)), url, ttl, policy, alert_at)
    assert evening["labels"] == {"alertname": DUE_BEFORE_OPENING, "severity": "ticket"}
    deadline = french.instant(support.at(day, wall(19, 30)), support.tz)
    assert f"- EVENING-1 (commune-de-blois) : intake, échéance {deadline}" in evening["annotations"]["description"]
    assert evening["endsAt"] == closing.isoformat().replace("+00:00", "Z")

    now = datetime.now(UTC)
    if now.minute >= 58:  # never straddle 18:00 in the moved zone
        time.sleep(3 * 60 - now.minute % 58 * 60)
        now = datetime.now(UTC)
    zone = ZoneInfo(location_at(now, 17))
    local = now.astimezone(zone)

    def at_1700_on_a_working_day(config: dict[str, Any]) -> None:
        for interval in config["time_intervals"]:
            for entry in interval["time_intervals"]:
                entry["location"] = str(zone)
                if "weekdays" in entry:
                    entry["weekdays"] = [generator().WEEKDAYS[local.weekday()]]
            if interval["name"] == "public-holidays" and support.is_holiday(local.date()):
                interval["time_intervals"] = [e for e in interval["time_intervals"]
                                              if (e["months"], e["days_of_month"]) != (
                                                  [generator().MONTHS[local.month - 1]], [str(local.day)])]

    alert = {k: evening[k] for k in ("labels", "annotations")}
    sink = deliver(tmp_path, at_1700_on_a_working_day, alerts=[alert])
    assert datetime.now(zone).hour == 17  # delivered before 18:00 on Alertmanager's clock
    (mail,) = sink.mails
    assert "échéance(s) avant la prochaine ouverture" in mail["Subject"]
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "EVENING-1 (commune-de-blois) : intake" in text and "https://slaledger.example.org/tickets/EVENING-1" in text
