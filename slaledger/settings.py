"""Settings from the environment and flags (12-factor), and loading the SLA policy file.

Every setting has an environment variable ``SLALEDGER_<NAME>``; a command-line flag wins
over it. A secret (a setting named like a password, secret or token) may instead be read from
the file named by ``SLALEDGER_<NAME>_FILE``: Compose secrets are files, never environment
values. ``Settings.public()`` is what the worker logs at start (secrets masked).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields, replace
from datetime import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from sla.policy import Policy, parse_policy
from streams.kafka_security import ClientSecurity

DEFAULT_POLICY = "default_policy.toml"
_SECRET_HINTS = ("password", "secret", "token")


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and parse a policy file; the convention's default policy when ``path`` is None."""
    if path is None:
        text = resources.files("sla").joinpath(DEFAULT_POLICY).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return parse_policy(text)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_URL_USERINFO = re.compile(r"(?<=://)[^/@]*@")
_URL_SECRET_PARAM = re.compile(r"(?i)([?&;](?:password|passwd|pwd|secret|token|api_key|apikey)=)[^&;#]*")


def mask_url(url: str) -> str:
    """A URL fit for a log: its user:password@ and any password-like query value masked."""
    return _URL_SECRET_PARAM.sub(r"\1***", _URL_USERINFO.sub("***@", url))


@dataclass(frozen=True)
class Settings(ClientSecurity):
    """Every setting of every process; the Kafka TLS/SASL fields (``kafka_*``) come from
    ``streams.kafka_security.ClientSecurity``, the one definition of them."""

    broker_url: str = "kafka://127.0.0.1:9092"
    partitions: int = 4
    replication_factor: int = 1  # of the topics `slaledger topics create` makes (3 in production)
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    data_dir: str = "./data"
    policy_file: str | None = None
    # Table store: memory:// (tests, dev: the table is rebuilt from its changelog at each
    # start) or slaledger-rocksdb:// (production: streams.store, persisted in data_dir).
    store_url: str = "memory://"
    timer_interval: float = 0.5
    command_timeout: float = 10.0
    # Embedded Tansu broker: work around its ListOffsets answer (see streams.tansu).
    embedded: bool = False
    # Apache Kafka: write each partition's batches in transactions (streams.fence), so that a
    # worker that lost its partitions cannot append to them (#30). The embedded broker (dev
    # mode) refuses transactions: there the worker writes without them, whatever this says.
    transactions: bool = True
    # Seconds a command waits for the broker at start before it fails with one line (a
    # service manager restarts it), instead of waiting on a broker that is not there.
    broker_timeout: float = 10.0
    session_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    rebalance_timeout: float = 10.0
    commit_interval: float = 1.0
    demo: bool = False  # feed a synthetic stream (dev mode)
    # SQL read model; empty: a SQLite file in data_dir (dev). Production: postgresql+psycopg://…
    database_url: str = ""
    database_password: str = ""  # put into database_url (so the URL holds no secret)
    metrics_port: int = 9108  # the projector's /metrics
    # Per-ticket at-risk/breached alerts pushed by the projector (empty: not pushed), with a
    # link to the ticket's page under public_url (default: this host's API address).
    alertmanager_url: str = ""
    alert_interval: float = 15.0
    # From this local time to the support closing, on working days, one alert lists the open
    # clocks due before the next opening (projections.alerts.due_before_opening).
    evening_alert_at: str = "17:30"
    public_url: str = ""
    # Bearer-token authentication of the API (tokens live in the database). Turn off only
    # for a worker that nobody can reach (tests).
    auth: bool = True
    # The web view's sessions end after this many seconds without a request, and this many
    # after sign-in whatever happens (slaledger.web.signin).
    web_session_idle: float = 1800.0
    web_session_lifetime: float = 43200.0
    # Proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the client
    # whose refused tokens are counted (slaledger.web.throttle); empty: the TCP peer.
    trusted_proxies: str = ""
    # iTop connector (``slaledger itop sync``): secrets belong in the environment, not in flags.
    itop_url: str = ""
    itop_user: str = ""
    itop_password: str = ""
    itop_token: str = ""
    itop_timezone: str = "Europe/Paris"  # the iTop server's time zone: its dates carry none
    # Monthly statements (``slaledger report``): the members directory (TOML: member id → name,
    # referent e-mail; slaledger.members) and the SMTP server they are sent through
    # (slaledger.mail). Security: starttls (default), ssl (implicit TLS) or none (a local
    # relay); port 0: 587, 465 or 25 accordingly. The password from the environment or, under
    # Compose, from a secret file.
    members_file: str = ""
    smtp_host: str = ""
    smtp_port: int = 0
    smtp_security: str = "starttls"
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_password_file: str = ""
    smtp_from: str = ""
    smtp_timeout: float = 30.0
    # Signed tree heads of the archive (#16): the operator's Ed25519 key, as a file (PEM or
    # raw seed) or the value itself; never in the repository. Empty: heads are not signed.
    signing_key_file: str = ""
    # What-if (#29): the directory of draft policy files the admins' web page offers (empty: no page).
    policy_drafts_dir: str = ""
    signing_key: str = ""
    # seconds between two heads when the archive grew (and daily): a dispute file downloaded a
    # few seconds after a ticket's last event is covered by a signed head
    head_interval: float = 5.0
    # The log's name, the first line of every checkpoint and the name of its key (C2SP
    # tlog-checkpoint origin: no scheme, no space, no plus). Empty: the public URL's host and
    # path followed by /slaledger, else localhost/slaledger.
    log_origin: str = ""
    # Witnesses the projector submits each checkpoint to (C2SP tlog-witness): comma-separated
    # `URL VKEY` pairs, URL the witness's submission prefix (no credentials in it), VKEY its
    # cosignature verifier key (name+hash+base64). Empty: none.
    witnesses: str = ""
    log_format: str = "json"  # json | console
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"SLALEDGER_{f.name.upper()}")
            secret_file = env.get(f"SLALEDGER_{f.name.upper()}_FILE")
            if raw is None and secret_file and any(h in f.name for h in _SECRET_HINTS):
                try:
                    raw = Path(secret_file).read_text(encoding="utf-8").rstrip("\r\n")
                except OSError as exc:
                    raise ValueError(f"SLALEDGER_{f.name.upper()}_FILE: {exc}") from None
            if raw is None:
                continue
            kind: type = type(f.default) if f.default is not None else str
            if kind is bool:
                flag = raw.strip().lower()
                if flag not in _TRUE + _FALSE:
                    # A typo must not turn a safeguard (SLALEDGER_AUTH) off.
                    raise ValueError(f"SLALEDGER_{f.name.upper()}: {raw!r} is not one of "
                                     f"{', '.join(_TRUE)} / {', '.join(x for x in _FALSE if x)}")
                values[f.name] = flag in _TRUE
            elif kind in (int, float):
                try:
                    values[f.name] = kind(raw)
                except ValueError:
                    raise ValueError(f"SLALEDGER_{f.name.upper()}: {raw!r} is not a number") from None
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)

    @property
    def database(self) -> str:
        if not self.database_url:
            return f"sqlite:///{Path(self.data_dir).resolve() / 'slaledger.db'}"
        if not self.database_password:
            return self.database_url
        scheme, sep, rest = self.database_url.partition("://")
        userinfo, at, location = rest.partition("@")
        if not sep or not at:
            raise ValueError("SLALEDGER_DATABASE_PASSWORD needs a user in SLALEDGER_DATABASE_URL (scheme://user@host/db)")
        user = userinfo.split(":", 1)[0]
        return f"{scheme}://{user}:{quote(self.database_password, safe='')}@{location}"

    @property
    def secure_cookie(self) -> bool:
        """The web view is reached over https (its public URL says so): cookies are Secure."""
        return self.public_url.lower().startswith("https://")

    @property
    def evening_alert_time(self) -> time:
        try:
            return time.fromisoformat(self.evening_alert_at)
        except ValueError:
            raise ValueError(f"SLALEDGER_EVENING_ALERT_AT: {self.evening_alert_at!r} is not a time of day "
                             "(HH:MM)") from None

    @property
    def ticket_url(self) -> str:
        """Link template of a ticket's page, for alerts."""
        base = self.public_url or f"http://{self.web_host}:{self.web_port}"
        return base.rstrip("/") + "/tickets/{ticket_id}"

    @property
    def origin(self) -> str:
        """The log's origin: ``log_origin``, else derived from ``public_url``."""
        if self.log_origin:
            return self.log_origin
        parts = urlsplit(self.public_url)
        return (parts.netloc.rpartition("@")[2] + parts.path.rstrip("/") + "/slaledger") if parts.netloc \
            else "localhost/slaledger"

    @property
    def bootstrap(self) -> str:
        return self.broker_url.removeprefix("kafka://")

    def public(self) -> dict[str, Any]:
        """The settings as logged at start: secrets masked, credentials in any URL too."""
        out = asdict(self)
        for key, value in out.items():
            if (any(h in key for h in _SECRET_HINTS) or key == "signing_key") and value:
                out[key] = "***"
            elif isinstance(value, str) and "://" in value:
                out[key] = mask_url(value)
        return out

    def policy(self) -> Policy:
        return load_policy(self.policy_file)
