"""Settings from the environment and flags (12-factor), and loading the SLA policy file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sla.policy import Policy, parse_policy

DEFAULT_POLICY = "default_policy.toml"


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and parse a policy file; the convention's default policy when ``path`` is None."""
    if path is None:
        text = resources.files("sla").joinpath(DEFAULT_POLICY).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return parse_policy(text)
