"""The domain's configuration error, shared by the policy and the calendars it holds."""

from __future__ import annotations


class PolicyError(ValueError):
    """The policy file is invalid, or cannot judge what it is asked (a day outside the years
    it lists non-working days for); the message names the version, SLA and field."""
