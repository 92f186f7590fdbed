"""Alertmanager's configuration: generated from the SLA policy's support calendar, checked with
amtool, and run in the real Alertmanager to show that ticket e-mails are held outside support
hours while pages go out at any hour."""

from __future__ import annotations

import importlib.util
import re
import shutil
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
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
from streams.embedded import free_port
from tests.conftest import system_tool
from tests.integration.conftest import api, wait_for

ROOT = Path(__file__).resolve().parents[2]
AM_DIR = ROOT / "infra" / "alertmanager"
ALERTMANAGER = AM_DIR / "alertmanager.yml"
RULES = sorted((ROOT / "infra" / "prometheus" / "rules").glob("*.rules.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("am_generate", AM_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def amtool() -> str:
    return system_tool("amtool", package="prometheus-alertmanager")


# --- generated, and from the policy ----------------------------------------------------------

def test_committed_configuration_is_the_generated_one() -> None:
    result = run(sys.executable, str(AM_DIR / "generate.py"), "--check")
    assert result.returncode == 0, result.stderr


def test_holidays_and_support_hours_are_the_policys(policy: Policy) -> None:
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

def test_configuration_is_valid() -> None:
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
])
def test_alert_routing(labels: list[str], receiver: str) -> None:
    result = run(amtool(), "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                 f"--verify.receivers={receiver}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr


def test_at_risk_is_inhibited_by_the_same_tickets_breach_only() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    rule = next(r for r in config["inhibit_rules"] if r["target_matchers"] == ['alertname="SLATicketAtRisk"'])
    assert rule["source_matchers"] == ['alertname="SLATicketBreached"']
    assert rule["equal"] == ["ticket_id", "sla"]
    assert all(r.get("equal") for r in config["inhibit_rules"])


def test_aggregates_are_muted_while_per_ticket_alerts_of_their_kind_fire() -> None:
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


def test_ticket_mails_are_held_outside_support_hours_and_pages_never() -> None:
    """The routes amtool picks: every route of a ticket e-mail is active in support hours and
    muted on holidays; no route of a page is."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    by_receiver: dict[str, list[dict[str, Any]]] = {}
    for route in routes(config):
        by_receiver.setdefault(route["receiver"], []).append(route)
    leaves = [r for r in routes(config) if not r.get("routes")]
    for route in leaves:
        if route["receiver"] == "on-call":
            assert "active_time_intervals" not in route and "mute_time_intervals" not in route
        else:
            assert route["active_time_intervals"] == ["support-hours"], route
            assert route["mute_time_intervals"] == ["public-holidays"], route


def test_a_member_with_contacts_gets_its_own_mails_and_the_support_team_too(tmp_path: Path, policy: Policy) -> None:
    text = generator().render(policy, {"commune-de-blois": ["referent@blois.example", "dsi@blois.example"]})
    shutil.copytree(AM_DIR / "templates", tmp_path / "templates")
    (tmp_path / "alertmanager.yml").write_text(text)
    config = str(tmp_path / "alertmanager.yml")
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
    from projections.alerts import ALERT_NAMES
    from projections.alerts import RUNBOOK as RUNBOOK_URL

    known = anchors(RUNBOOK.read_text())
    rules = [r for f in RULES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"] if "alert" in r]
    assert rules
    for rule in rules:
        assert "for" in rule, rule["alert"]
        url = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == RUNBOOK_URL and base.endswith("/docs/runbook.md"), rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in known, rule["alert"]
    # The per-ticket alerts the projector pushes (projections.alerts) have theirs too.
    for name in ALERT_NAMES.values():
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


def night_location(now: datetime) -> str:
    """A fixed-offset zone where ``now`` is 03:xx: outside support hours whatever the day."""
    offset = (3 - now.hour) % 24
    offset = offset - 24 if offset > 14 else offset
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"


def reachable(url: str) -> bool:
    try:
        return api("GET", url, timeout=2)[0] == 200
    except OSError:
        return False


def deliver(tmp_path: Path, adapt: Callable[[dict[str, Any]], None] = lambda config: None) -> Sink:
    """The committed configuration in the real Alertmanager, its deliveries pointed at a
    ``Sink`` (plain SMTP on loopback) and its group waits shortened, changed by ``adapt``:
    sends one ticket alert and one page, waits for the page and several flushes of the ticket
    group, and returns what was delivered."""
    binary = system_tool("prometheus-alertmanager", package="prometheus-alertmanager")
    sink = Sink()
    config = yaml.safe_load(ALERTMANAGER.read_text())
    config["global"].update(smtp_smarthost=f"127.0.0.1:{sink.smtp.server_address[1]}", smtp_require_tls=False)
    (tmp_path / "secret").write_text("x")
    config["global"]["smtp_auth_password_file"] = str(tmp_path / "secret")
    on_call = next(r for r in config["receivers"] if r["name"] == "on-call")["webhook_configs"][0]
    on_call["url"] = f"http://127.0.0.1:{sink.http.server_port}/v1/alerts"
    on_call["http_config"]["authorization"]["credentials_file"] = str(tmp_path / "secret")
    for route in routes(config):
        route["group_wait"] = "1s"
    adapt(config)
    shutil.copytree(AM_DIR / "templates", tmp_path / "templates", dirs_exist_ok=True)
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([binary, f"--config.file={tmp_path / 'alertmanager.yml'}",
                                f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--cluster.listen-address="], stdout=subprocess.DEVNULL,
                               stderr=(tmp_path / "alertmanager.log").open("wb"))
    try:
        wait_for(lambda: process.poll() is None and reachable(f"{url}/-/ready"), 30, what="alertmanager ready")
        now = datetime.now(UTC)
        ticket = {"labels": {"alertname": "SLATicketBreached", "severity": "ticket", "ticket_id": "SL-2345678923",
                             "sla": "intake", "member": "commune-de-blois", "kind": "incident"},
                  "annotations": {"summary": "SL-2345678923 (commune-de-blois) : intake dépassé",
                                  "description": "Demande déposée le lundi …",
                                  "link": "https://slaledger.example.org/tickets/SL-2345678923",
                                  "runbook_url": "https://forge.example.org/runbook.md#slaticketbreached"}}
        page = {"labels": {"alertname": "SlaledgerWorkerDown", "severity": "page", "job": "slaledger-worker"},
                "annotations": {"summary": "Worker slaledger injoignable"}}
        alerts = [dict(a, startsAt=now.isoformat(), endsAt=(now + timedelta(minutes=5)).isoformat())
                  for a in (ticket, page)]
        status, _ = api("POST", f"{url}/api/v2/alerts", alerts)
        assert status == 200
        wait_for(lambda: sink.pages, 30, what="the page delivered")
        time.sleep(4)  # several flushes of the ticket group (group_wait 1s)
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
    assert mail["To"] == "support@example.org"
    assert mail["Subject"].startswith("[slaledger] 1 alerte(s) : SL-2345678923 (commune-de-blois) : intake dépassé")
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert '<a href="https://slaledger.example.org/tickets/SL-2345678923">Ouvrir la demande</a>' in html
    assert "Que faire (procédure)" in html and 'lang="fr"' in html
    assert "Demande : https://slaledger.example.org/tickets/SL-2345678923" in text
    assert "Que faire : https://forge.example.org/runbook.md#slaticketbreached" in text


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
