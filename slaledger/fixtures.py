"""A policy with one short intake SLA, shared by the tests and the benchmarks: breaches in
seconds instead of hours, with the convention's vendor exclusion and French labels."""

from __future__ import annotations

from pathlib import Path


def short_intake_policy(seconds: float, *, policy_id: str = "tiny-1", title: str = "Prise en compte (test)") -> str:
    """The policy's TOML: intake runs ``seconds`` from filing to acknowledgement, at risk at half."""
    return f"""
[[versions]]
id = "{policy_id}"
effective_from = "2020-01-01T00:00:00Z"
timezone = "Europe/Paris"
warning_ratio = 0.5
[versions.excluded_products]
"local-trust-mpe" = "Produit de l'éditeur"
[[versions.slas]]
name = "intake"
title = "{title}"
start_label = "Demande déposée"
stop_label = "Prise en compte"
due_label = "prise en compte due"
rule = "elapsed"
duration = {seconds}
starts_on = ["filed"]
stops_on = ["acknowledged"]
"""


def write_short_intake_policy(directory: Path, seconds: float, **options: str) -> Path:
    path = directory / "short-intake-policy.toml"
    path.write_text(short_intake_policy(seconds, **options), encoding="utf-8")
    return path
