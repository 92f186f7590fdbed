"""Every HTTP route of the product, read from the servers' own route tables, refuses a
request without credentials (except health, readiness, sign-in and static files); web
sessions; refused tokens limited per client address. Against a real worker and projector on
the embedded broker, with the token database in SQLite (PostgreSQL: tests/integration/
test_access.py)."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine

from projections.migrate import create_schema
from projections.tokens import create_token, revoke_token
from slaledger.bootstrap import build_worker
from slaledger.brokers.embedded import EmbeddedBroker
from slaledger.brokers.process import free_port
from slaledger.settings import Settings
from slaledger.web import actions
from slaledger.web.metrics_server import metrics_app
from streams.topics import create_topics
from tests.integration.conftest import Worker, wait_for

pytestmark = pytest.mark.integration

OPEN = {"/healthz", "/readyz", "/login", "/static/{name}"}  # open by design: probes, sign-in, CSS/JS
SAMPLE = {"ticket_id": "SL-23456789AB", "action": "acknowledge", "name": "web.css"}


@dataclass
class Stack:
    worker: Worker
    second: Worker  # shares the partitions: a ticket page is served by the worker owning it
    projector_url: str
    database: str
    agent: str
    referent: str

    @property
    def url(self) -> str:
        return self.worker.url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("web-access")
    database = f"sqlite:///{workdir / 'slaledger.db'}"
    engine = create_engine(database)
    create_schema(engine)
    _, agent = create_token(engine, "agent", label="alice")
    _, referent = create_token(engine, "referent", "commune-de-blois")
    drafts = workdir / "drafts"  # the admins' what-if page exists only with a drafts directory
    drafts.mkdir()
    env = {"SLALEDGER_AUTH": "on", "SLALEDGER_DATABASE_URL": database, "SLALEDGER_POLICY_DRAFTS_DIR": str(drafts),
           # the test client stands for a proxy: each scenario names its own client address
           "SLALEDGER_TRUSTED_PROXIES": "127.0.0.1"}
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        create_topics(broker.bootstrap, 4)
        worker = Worker(broker, workdir, extra_env=env).start()
        second = Worker(broker, workdir, extra_env=env, name="w2").start()
        wait_for(lambda: all(len(w_partitions(w)) < 4 for w in (worker, second)), 60, what="partitions shared")
        metrics_port = free_port()
        with (workdir / "projector.log").open("ab") as log:
            projector = subprocess.Popen(
                [sys.executable, "-m", "slaledger.cli", "project", "--metrics-port", str(metrics_port)],
                env={**worker.env(), "SLALEDGER_DATA_DIR": str(workdir / "projector")}, stdout=log, stderr=log,
                start_new_session=True)
        projector_url = f"http://127.0.0.1:{metrics_port}"
        try:
            wait_for(lambda: projector.poll() is None and reachable(projector_url), 60, what="projector metrics")
            yield Stack(worker, second, projector_url, database, agent, referent)
        finally:
            projector.send_signal(signal.SIGKILL)
            projector.wait()
            second.stop(signal.SIGKILL)
            worker.stop(signal.SIGKILL)


def w_partitions(worker: Worker) -> list[int]:
    return list(json.loads(request(worker.url, "GET", "/readyz").body)["partitions"])


def reachable(url: str) -> bool:
    try:
        request(url, "GET", "/metrics")
    except OSError:
        return False
    return True


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: str


def request(base: str, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> Answer:
    """One request, redirects not followed (a redirect to the sign-in page is the answer)."""
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def worker_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """The worker's route table as its web server builds it at start (``init_server``), with
    the settings of a production worker."""
    settings = Settings(auth=True, database_url=f"sqlite:///{tmp_path / 'routes.db'}", data_dir=str(tmp_path),
                        policy_drafts_dir=str(tmp_path))
    web = build_worker(settings).app.web
    web.init_server()
    return sorted({(r.method, r.resource.canonical) for r in web.web_app.router.routes()  # type: ignore[attr-defined]
                   if r.resource is not None})


def projector_routes() -> list[tuple[str, str]]:
    app = metrics_app(CollectorRegistry(), auth=None)
    return sorted({(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None})


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], path)


def refuses(answer: Answer) -> bool:
    """401, or a page's redirect to the sign-in form."""
    return answer.status == 401 or (answer.status == 303 and answer.headers["Location"].startswith("/login"))


def sign_in(stack: Stack, token: str, client: str) -> str:
    answer = request(stack.url, "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded",
                                                  "X-Forwarded-For": client},
                     urllib.parse.urlencode({"token": token, "next": "/"}).encode())
    assert answer.status == 303, answer.body[:300]
    cookie = answer.headers["Set-Cookie"]
    match = re.match(r"slaledger_session=([^;]+);", cookie)
    assert match and token not in cookie, cookie
    return match.group(1)


def session(sid: str) -> dict[str, str]:
    return {"Cookie": f"slaledger_session={sid}"}


def test_faust_routes_are_gone_and_every_route_refuses_the_anonymous(stack: Stack, tmp_path: Path) -> None:
    routes = worker_routes(tmp_path)
    paths = {path for _, path in routes}
    assert "/admin/what-if" in paths  # every page of the product is in the table probed below
    assert not any(p.startswith(("/table", "/router", "/graph", "/stats", "/assignment", "/performance"))
                   for p in paths), paths
    servers = {"worker": (stack.url, routes), "projector": (stack.projector_url, projector_routes())}
    table = []
    for server, (base, server_routes) in servers.items():
        for method, path in server_routes:
            anonymous = request(base, method, concrete(path))
            if path in OPEN:
                requires = "none"
                assert anonymous.status < 500, (server, method, path, anonymous.status)
            else:
                assert refuses(anonymous) or (method == "HEAD" and anonymous.status == 405), (
                    server, method, path, anonymous.status, anonymous.body[:200])
                requires = "none answers (405)" if anonymous.status == 405 else requirement(stack, base, method, path)
            table.append(f"{server:9} {method:5} {path:45} {anonymous.status}  {requires}")
    print("\n".join(["server    method path                                          anonymous  requires", *table]))
    # a ticket's read by a stranger gets no table data either
    assert request(stack.url, "GET", f"/table/tickets/{SAMPLE['ticket_id']}/").status == 404
    assert request(stack.url, "GET", "/router/").status == 404


def requirement(stack: Stack, base: str, method: str, path: str) -> str:
    """What a route takes, as the server answers it: a bearer token (of the support team, or
    any), a web session, or both."""
    if method == "HEAD":
        return "as GET"
    if path == "/logout":
        return "session (ended by it; without one, nothing to end)"
    body = b"{}" if method == "POST" else None
    referent = request(base, method, concrete(path), {"Authorization": f"Bearer {stack.referent}",
                                                      "Content-Type": "application/json"}, body)
    agent = request(base, method, concrete(path), {"Authorization": f"Bearer {stack.agent}",
                                                   "Content-Type": "application/json"}, body)
    kinds = []
    if not refuses(agent) and agent.status != 403:
        kinds.append("bearer (staff)" if referent.status == 403 else "bearer")
    if base == stack.url:
        sid = sign_in(stack, stack.agent, "192.0.2.200")
        with_session = request(base, method, concrete(path), session(sid))
        if not refuses(with_session):  # a form post without its form token is 403
            kinds.append("session + form token" if with_session.status == 403 and method == "POST" else "session")
    return " or ".join(kinds) or "?"


def test_a_session_is_ended_by_sign_out_and_by_revoking_its_token(stack: Stack) -> None:
    sid = sign_in(stack, stack.referent, "192.0.2.10")
    assert request(stack.url, "GET", "/", session(sid)).status == 200
    # the cookie is no bearer token, and the token in a cookie is no session
    assert request(stack.url, "GET", "/api/tickets", {"Authorization": f"Bearer {sid}",
                                                      "X-Forwarded-For": "192.0.2.11"}).status == 401
    assert refuses(request(stack.url, "GET", "/", session(stack.referent)))
    out = request(stack.url, "POST", "/logout", session(sid))
    assert out.status == 303 and "Max-Age=0" in out.headers["Set-Cookie"]
    # the old id, replayed after sign-out, gets the sign-in page
    assert refuses(request(stack.url, "GET", "/", session(sid)))
    login = request(stack.url, "GET", "/login", session(sid))
    assert login.status == 200 and "Votre session a expiré ou a été fermée" in login.body

    _, secret = create_token(create_engine(stack.database), "auditor", label="cabinet")
    sid = sign_in(stack, secret, "192.0.2.12")
    assert request(stack.url, "GET", "/", session(sid)).status == 200
    assert revoke_token(create_engine(stack.database), secret)
    assert refuses(request(stack.url, "GET", "/", session(sid)))


def test_the_cookie_is_secure_by_configuration_not_by_header(stack: Stack) -> None:
    answer = request(stack.url, "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded",
                                                  "X-Forwarded-For": "192.0.2.20", "X-Forwarded-Proto": "https"},
                     urllib.parse.urlencode({"token": stack.agent}).encode())
    assert answer.status == 303 and "Secure" not in answer.headers["Set-Cookie"]  # SLALEDGER_PUBLIC_URL is unset


def test_refused_tokens_are_limited_per_client_address(stack: Stack) -> None:
    client = {"X-Forwarded-For": "198.51.100.7"}
    for n in range(10):
        assert request(stack.url, "GET", "/api/tickets", {**client, "Authorization": f"Bearer slt_guess{n}"}
                       ).status == 401
    held = request(stack.url, "GET", "/api/tickets", {**client, "Authorization": f"Bearer {stack.agent}"})
    assert held.status == 429 and 0 < int(held.headers["Retry-After"]) <= 300
    assert "Trop de jetons refusés" in json.loads(held.body)["error"]
    # the sign-in form of that address too; another address is not held back
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    held = request(stack.url, "POST", "/login", {**client, **form}, urllib.parse.urlencode({"token": stack.agent})
                   .encode())
    assert held.status == 429 and held.headers["Retry-After"] and "Trop de jetons refusés" in held.body
    assert request(stack.url, "GET", "/api/tickets", {"X-Forwarded-For": "198.51.100.8",
                                                      "Authorization": f"Bearer {stack.agent}"}).status == 200
    # sign-in failures count the same way, and the projector's /metrics counts its own
    other = {"X-Forwarded-For": "198.51.100.9", **form}
    for _ in range(10):
        assert request(stack.url, "POST", "/login", other, b"token=slt_guess").status == 401
    assert request(stack.url, "POST", "/login", other, urllib.parse.urlencode({"token": stack.agent}).encode()
                   ).status == 429
    log = stack.worker.log_path.read_text()
    assert "bearer token refused" in log and "web sign-in refused" in log and "slt_guess" not in log


def test_the_projector_metrics_take_the_staff_token(stack: Stack) -> None:
    assert request(stack.projector_url, "GET", "/metrics").status == 401
    assert request(stack.projector_url, "GET", "/metrics", {"Authorization": f"Bearer {stack.referent}"}).status == 403
    answer = request(stack.projector_url, "GET", "/metrics", {"Authorization": f"Bearer {stack.agent}"})
    assert answer.status == 200 and "slaledger_" in answer.body
    assert request(stack.projector_url, "GET", "/").status == 404


def test_prometheus_token_reads_the_metrics_and_nothing_else(stack: Stack) -> None:
    """The `metrics` role (Prometheus' token in compose): /metrics on the workers and the
    projector; every other route 403, and no web session."""
    _, scraper = create_token(create_engine(stack.database), "metrics", label="prometheus")
    bearer = {"Authorization": f"Bearer {scraper}"}
    for base in (stack.url, stack.projector_url):
        answer = request(base, "GET", "/metrics", bearer)
        assert answer.status == 200 and "# HELP" in answer.body, (base, answer.status)
    for path in ("/api/tickets", f"/api/tickets/{SAMPLE['ticket_id']}", "/api/openapi.json",
                 f"/api/tickets/{SAMPLE['ticket_id']}/dispute-file?format=json"):
        answer = request(stack.url, "GET", path, bearer)
        assert answer.status == 403 and "/metrics" in answer.body, (path, answer.status, answer.body[:200])
    answer = request(stack.url, "POST", f"/api/tickets/{SAMPLE['ticket_id']}/acknowledge",
                     {**bearer, "Content-Type": "application/json"}, b"{}")
    assert answer.status == 403
    signed_in = request(stack.url, "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded",
                                                      "X-Forwarded-For": "192.0.2.77"},
                        urllib.parse.urlencode({"token": scraper, "next": "/"}).encode())
    assert signed_in.status == 401 and "Set-Cookie" not in signed_in.headers


def test_the_inputs_that_gave_500_get_a_french_4xx(stack: Stack) -> None:
    """#25's four: a 5,000-digit integer, JSON nested 30,000 deep, a lone surrogate, a form
    date in year 1 — from the worker itself, through its middlewares."""
    bearer = {"Authorization": f"Bearer {stack.agent}", "Content-Type": "application/json",
              "X-Forwarded-For": "192.0.2.40"}
    filing = b'{"kind": "incident", "channel": "portal", "member": "m", "product": "ent", "subject": %s}'
    for body, why in ((filing % (b"9" * 5000), "chiffres"), (b"[" * 30_000 + b"]" * 30_000, "imbrication"),
                      (filing % b'"\\ud800"', "Unicode isolé")):
        answer = request(stack.url, "POST", "/api/tickets", bearer, body)
        assert answer.status == 422 and why in json.loads(answer.body)["error"], answer.body[:300]

    sid = sign_in(stack, stack.agent, "192.0.2.41")
    form = {"action": "inform", "message": "Coupure réseau", "restoration_eta": "0001-01-01T00:00",
            "form_token": actions.form_token(sid)}
    answer = request(stack.url, "POST", f"/tickets/{SAMPLE['ticket_id']}/actions",
                     {**session(sid), "Content-Type": "application/x-www-form-urlencoded"},
                     urllib.parse.urlencode(form).encode())
    assert answer.status == 422 and "hors des dates acceptées" in answer.body, answer.body[:500]


def test_a_session_opened_on_one_worker_holds_on_every_worker_until_signed_out(stack: Stack) -> None:
    """Sessions live in the database: a ticket page forwarded to the worker owning the ticket
    carries the cookie there, and a sign-out on one worker ends the session on all."""
    bearer = {"Authorization": f"Bearer {stack.agent}", "Content-Type": "application/json",
              "X-Forwarded-For": "192.0.2.50"}
    tickets = []
    for _ in range(6):  # over 4 partitions shared by two workers: both own some of them
        answer = request(stack.url, "POST", "/api/tickets", bearer, json.dumps(
            {"kind": "incident", "channel": "portal", "member": "m", "product": "ent", "subject": "Panne"}).encode())
        assert answer.status == 201, answer.body[:300]
        tickets.append(json.loads(answer.body)["ticket"]["id"])
    sid = sign_in(stack, stack.agent, "192.0.2.51")
    for worker in (stack.worker, stack.second):
        for tid in tickets:
            page = request(worker.url, "GET", f"/tickets/{tid}", session(sid))
            assert page.status == 200 and tid in page.body, (worker.name, tid, page.status)
    assert request(stack.second.url, "POST", "/logout", session(sid)).status == 303
    for worker in (stack.worker, stack.second):
        assert refuses(request(worker.url, "GET", f"/tickets/{tickets[0]}", session(sid)))
