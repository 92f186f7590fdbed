"""The proxy profile's Caddyfile in the real Caddy: the workers at /, Grafana at /grafana/, a
Grafana ticket link sent to the web view, /metrics never proxied. The Compose host names are
pointed at local stand-ins; TLS is left to Caddy's automatic HTTPS (checked by adapting the
file in test_configs)."""

from __future__ import annotations

import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from slaledger.brokers.process import free_port
from tests.conftest import system_tool
from tests.integration.conftest import wait_for

CADDYFILE = Path(__file__).resolve().parents[2] / "infra" / "caddy" / "Caddyfile"


def stand_in(name: str) -> HTTPServer:
    """An upstream answering "<name> <path>"."""

    class Upstream(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{name} {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def get(url: str) -> tuple[int, str, str]:
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, response.read().decode(), response.headers.get("Location", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), err.headers.get("Location", "")


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[str]:
    caddy = system_tool("caddy", package="caddy")
    worker, grafana = stand_in("worker"), stand_in("grafana")
    port = free_port()
    text = CADDYFILE.read_text()
    text = text.replace("{$SLALEDGER_DOMAIN:localhost}", f"http://127.0.0.1:{port}")
    text = text.replace("name worker", "name localhost").replace("port 8080", f"port {worker.server_port}")
    text = text.replace("grafana:3000", f"127.0.0.1:{grafana.server_port}")
    (tmp_path / "Caddyfile").write_text("{\n\tadmin off\n}\n" + text)
    process = subprocess.Popen([caddy, "run", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
                               env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
                                    "XDG_CONFIG_HOME": str(tmp_path)},
                               stdout=subprocess.DEVNULL, stderr=(tmp_path / "caddy.log").open("wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert process.poll() is None, (tmp_path / "caddy.log").read_text()[-2000:]
            try:
                return get(f"{url}/healthz")[0] == 200
            except OSError:
                return False

        wait_for(up, 30, what="caddy serving")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        worker.shutdown()
        grafana.shutdown()


def test_the_proxy_routes_the_web_view_grafana_and_ticket_links(proxy: str) -> None:
    assert get(f"{proxy}/tickets/SL-2345678923") == (200, "worker /tickets/SL-2345678923", "")
    assert get(f"{proxy}/api/tickets?page=2")[1] == "worker /api/tickets?page=2"
    assert get(f"{proxy}/grafana/d/slaledger-support-queue")[1] == "grafana /grafana/d/slaledger-support-queue"
    # A dashboard's ticket link, if Grafana put its sub-path in front, still opens the ticket.
    status, _, location = get(f"{proxy}/grafana/tickets/SL-2345678923")
    assert (status, location) == (302, "/tickets/SL-2345678923")
    assert get(f"{proxy}/metrics")[0] == 404
    assert get(f"{proxy}/readyz")[0] == 404
