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
RULES = INFRA / "prometheus" / "rules" / "slaledger.rules.yml"


def tool(name: str) -> str:
    return system_tool(name, package="prometheus-alertmanager" if name == "amtool" else "prometheus")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


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
    expected = {"kafka", "kafka-1", "kafka-2", "kafka-3", "postgres", "topics-init", "prometheus-token", "db-grants",
                "worker", "projector", "prometheus", "alertmanager", "grafana"}
    assert set(compose["services"]) == expected


def test_every_slaledger_command_is_a_real_cli_command(compose: dict[str, Any]) -> None:
    parser = build_parser()
    commands = {name: s["command"] for name, s in compose["services"].items()
                if s.get("image", "").startswith("slaledger")}
    assert set(commands) == {"topics-init", "prometheus-token", "worker", "projector"}
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


def test_compose_runs_the_kafka_version_the_tests_run(compose: dict[str, Any]) -> None:
    """One Apache Kafka version: the one infra/kafka/pom.xml pins for the tests and benches."""
    from streams.kafka_broker import kafka_version

    for name in ("kafka", "kafka-1", "kafka-2", "kafka-3"):
        assert compose["services"][name]["image"] == f"apache/kafka:{kafka_version()}", name


def test_long_running_services_have_health_checks_and_restart_policies(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in ("topics-init", "prometheus-token", "db-grants"):
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
            if secret_like.search(key) or secret_like.search(str(value).split("${")[0]):
                seen += 1
                assert re.fullmatch(r".*\$\{\w+(:\?[^}]*)?\}.*", str(value)), f"{name}: {key} is written in the file"
    assert seen >= 5
    assert {s["environment"] for s in raw["secrets"].values()} <= set(env_example())


def test_mounted_configuration_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
    assert (ROOT / compose["services"]["worker"]["build"]["dockerfile"]).exists()


# --- Prometheus -------------------------------------------------------------------------------

def test_rules_are_valid_and_every_alert_has_a_firing_and_a_silent_case() -> None:
    promtool = tool("promtool")
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = INFRA / "prometheus" / "tests" / "slaledger.test.yml"
    result = run(promtool, "test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    # Coverage: each alert appears in a case that expects it and in one that expects nothing.
    alerts = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]
    fires, silent = set(), set()
    for case in yaml.safe_load(tests.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    assert set(alerts) == fires == silent


def test_prometheus_configuration_is_valid(tmp_path: Path) -> None:
    promtool = tool("promtool")
    config = (INFRA / "prometheus" / "prometheus.yml").read_text()
    # The paths of the container, made local: the secret file and the mounted rules.
    (tmp_path / "prometheus_token").write_text("x" * 32)
    config = config.replace("/run/secrets/prometheus_token", str(tmp_path / "prometheus_token"))
    config = config.replace("/etc/prometheus/rules/", str(RULES.parent) + "/")
    (tmp_path / "prometheus.yml").write_text(config)
    result = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 31 rules found" in result.stdout


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
