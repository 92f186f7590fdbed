"""iTop client: ``core/get`` over iTop's REST/JSON API, page by page, and its errors.

Written for iTop 3.0–3.2 with the ITIL profiles (``itop-request-mgmt-itil``,
``itop-incident-mgmt-itil``), REST API version 1.3; the ``limit``/``page`` paging of
``core/get`` exists since iTop 3.0 (an older iTop ignores it and answers everything at
once, which the client detects). iTop's times are its own "Y-m-d H:i:s", local to the iTop
server (Europe/Paris by default): ``parse_itop_time`` reads them.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

log = structlog.get_logger(__name__)

API_VERSION = "1.3"
ITOP_CLASSES = ("UserRequest", "Incident")
ITOP_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_PAGE_SIZE = 1000
MAX_PAGES = 10_000  # a safety stop: 10 million objects in one pass is a server that loops
# iTop's change log (core/cmdbchangeop.class.inc.php): one CMDBChangeOpSetAttributeScalar per
# scalar attribute changed, with ``objclass`` (the object's own class), ``objkey``,
# ``attcode``, ``oldvalue``, ``newvalue`` and ``date`` (an external field of its CMDBChange).
CHANGE_OP_CLASS = "CMDBChangeOpSetAttributeScalar"
CHANGE_OP_FIELDS = "objclass,objkey,attcode,oldvalue,newvalue,date"
CHANGE_LOG_BATCH = 100  # object keys per change-log query: the OQL stays short, pages do the rest

_COMMON_FIELDS = (
    "ref", "title", "description", "org_id", "org_name", "service_id", "service_name", "origin", "status",
    "caller_id", "caller_id_friendlyname", "start_date", "assignment_date", "last_pending_date",
    "resolution_date", "close_date", "last_update", "pending_reason", "solution", "public_log",
)
OUTPUT_FIELDS = {
    "UserRequest": ",".join((*_COMMON_FIELDS, "request_type")),
    "Incident": ",".join(_COMMON_FIELDS),  # an Incident has no request_type: it is an incident
}

# RestResult codes (application/applicationextension/rest/RestResult.php).
ERROR_CODES = {
    1: "UNAUTHORIZED", 2: "MISSING_VERSION", 3: "MISSING_JSON", 4: "INVALID_JSON", 5: "MISSING_AUTH_USER",
    6: "MISSING_AUTH_PWD", 10: "UNSUPPORTED_VERSION", 11: "UNKNOWN_OPERATION", 12: "UNSAFE", 13: "INVALID_PAGE",
    100: "INTERNAL_ERROR",
}
# Only INTERNAL_ERROR may go away by itself (database busy, a restart); the others are
# configuration (account, profile, version) that a person must fix.
TRANSIENT_CODES = frozenset({100})


class ItopError(Exception):
    """iTop could not be read. ``transient``: retrying later may help (network, HTTP 5xx,
    INTERNAL_ERROR); otherwise the configuration must change (credentials, REST profile)."""

    def __init__(self, message: str, *, code: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.message, self.code, self.transient = message, code, transient


# --- the client -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ItopObject:
    """One object of a ``core/get`` answer: class, key and the requested fields."""

    itop_class: str
    key: str
    fields: Mapping[str, Any]

    @property
    def ref(self) -> str:
        return str(self.fields.get("ref") or f"{self.itop_class}::{self.key}")

    @property
    def last_update(self) -> str:
        return str(self.fields.get("last_update") or "")

    @property
    def version(self) -> str:
        """What the checkpoint remembers of an object read: its last_update and a digest of
        its fields (two changes in the same second share a last_update)."""
        digest = hashlib.sha256(json.dumps(dict(self.fields), sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.last_update}#{digest[:16]}"


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One status change from iTop's change log: what the ticket went from and to, and when
    (iTop's own "Y-m-d H:i:s"). ``op`` is the change op's id, which orders changes made in
    the same second."""

    date: str
    old: str
    new: str
    op: int = 0


def endpoint_of(url: str) -> str:
    """The REST endpoint from an iTop base URL (``https://itop.example/``) or the endpoint itself."""
    url = url.strip().rstrip("/")
    if not url:
        raise ValueError("the iTop URL is empty (--url or SLALEDGER_ITOP_URL)")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"the iTop URL must be http(s)://…, not {url!r}")
    if parsed.username or parsed.password:
        raise ValueError("give the iTop credentials with --user/--password or --token, not in the URL")
    path = parsed.path if parsed.path.endswith(".php") else parsed.path + "/webservices/rest.php"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


class ItopClient:
    """``core/get`` over iTop's REST/JSON API, with user/password or token authentication."""

    def __init__(self, url: str, *, user: str = "", password: str = "", token: str = "",
                 timeout: float = 30.0) -> None:
        self.endpoint = endpoint_of(url)
        if not token and not user:
            raise ValueError("iTop credentials missing: --user/--password or --token "
                             "(env SLALEDGER_ITOP_USER/SLALEDGER_ITOP_PASSWORD or SLALEDGER_ITOP_TOKEN)")
        self.user, self.password, self.token, self.timeout = user, password, token, timeout

    @property
    def account(self) -> str:
        return self.user or "token"

    def call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """POST one operation; returns the answer or raises ``ItopError`` for any error code."""
        form = {"json_data": json.dumps(request, separators=(",", ":"))}
        if self.token:
            form["auth_token"] = self.token
        else:
            form.update(auth_user=self.user, auth_pwd=self.password)
        url = f"{self.endpoint}?{urllib.parse.urlencode({'version': API_VERSION})}"
        http = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
        operation = request.get("operation")
        try:
            with urllib.request.urlopen(http, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise ItopError(f"iTop a répondu HTTP {exc.code} ({self.endpoint})", code=None,
                            transient=exc.code >= 500 or exc.code in (408, 429)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ItopError(f"iTop injoignable ({self.endpoint}) : {reason}", transient=True) from None
        try:
            answer = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            # A login page or a proxy error instead of JSON: often transient (maintenance page).
            raise ItopError(f"iTop n'a pas répondu en JSON ({self.endpoint}) : {body[:80]!r}", transient=True) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("code"), int):
            raise ItopError(f"réponse iTop inattendue pour {operation} : {str(answer)[:120]}", transient=False)
        code = answer["code"]
        if code != 0:
            name = ERROR_CODES.get(code, "UNKNOWN")
            raise ItopError(f"iTop a répondu le code {code} ({name}) pour {operation} : {answer.get('message', '')}",
                            code=code, transient=code in TRANSIENT_CODES)
        return answer

    def get_page(self, itop_class: str, oql: str | int, limit: int, page: int,
                 output_fields: str | None = None) -> tuple[list[ItopObject], int]:
        """One page of ``core/get``; returns the usable objects and how many the page held."""
        answer = self.call({"operation": "core/get", "class": itop_class, "key": oql,
                            "output_fields": output_fields or OUTPUT_FIELDS.get(itop_class, "*"), "limit": limit,
                            "page": page})
        raw = answer.get("objects") or {}  # PHP sends null when nothing matches
        if not isinstance(raw, dict):
            raise ItopError(f"réponse iTop inattendue : objects = {str(raw)[:80]}")
        found: list[ItopObject] = []
        for name, item in raw.items():
            if not isinstance(item, dict) or item.get("code", 0) != 0 or not isinstance(item.get("fields"), dict):
                log.warning("itop object unreadable, skipped", itop_object=name,
                            code=item.get("code") if isinstance(item, dict) else None)
                continue
            key = str(item.get("key") or name.rpartition("::")[2])
            found.append(ItopObject(str(item.get("class") or itop_class), key, item["fields"]))
        return found, len(raw)

    def changed_since(self, itop_class: str, since: str | None, page_size: int) -> Iterator[ItopObject]:
        """Every object of ``itop_class`` with ``last_update >= since`` (all when None), page by page."""
        oql = f"SELECT {itop_class}" + (f" WHERE last_update >= '{since}'" if since else "")
        yield from self._pages(itop_class, oql, page_size)

    def _pages(self, itop_class: str, oql: str, page_size: int, output_fields: str | None = None,
               ) -> Iterator[ItopObject]:
        previous: list[str] | None = None
        for page in range(1, MAX_PAGES + 1):
            objects, count = self.get_page(itop_class, oql, page_size, page, output_fields)
            keys = [o.key for o in objects]
            if previous is not None and keys == previous:
                log.info("itop ignores paging, stopping", itop_class=itop_class, page=page)
                return  # an iTop before 3.0 answers the whole set on every page
            yield from objects
            if count != page_size:  # a short page is the last; a longer one means no paging
                return
            previous = keys
        raise ItopError(f"plus de {MAX_PAGES} pages pour {itop_class} : arrêt par sécurité")

    def status_changes(self, itop_class: str, keys: Iterable[str], page_size: int = 100,
                       ) -> dict[str, list[StatusChange]]:
        """The status changes of these objects from iTop's change log, oldest first.

        Why: an object's snapshot keeps only the last pending and resolution dates, so a
        ticket paused and resumed twice between two polls would lose its first pause; the
        change log has every transition with its own date. One ``core/get`` per batch of
        keys and page. Raises ``ItopError`` as ``core/get`` does (the account may lack the
        right to read the change log: the caller decides what to do without it).
        """
        wanted = sorted({str(k) for k in keys}, key=lambda k: (len(k), k))
        for key in wanted:
            if not key.isdigit():
                raise ValueError(f"not an iTop object key: {key!r}")
        out: dict[str, list[StatusChange]] = {k: [] for k in wanted}
        for start in range(0, len(wanted), CHANGE_LOG_BATCH):
            batch = wanted[start:start + CHANGE_LOG_BATCH]
            oql = (f"SELECT {CHANGE_OP_CLASS} WHERE objclass = '{itop_class}' AND attcode = 'status' "
                   f"AND objkey IN ({', '.join(batch)})")
            for op in self._pages(CHANGE_OP_CLASS, oql, page_size, CHANGE_OP_FIELDS):
                f = op.fields
                key = str(f.get("objkey") or "")
                if key not in out or str(f.get("attcode")) != "status" or str(f.get("objclass")) != itop_class:
                    log.warning("itop change op not asked for, ignored", op=op.key, objkey=key)
                    continue
                out[key].append(StatusChange(str(f.get("date") or ""), str(f.get("oldvalue") or ""),
                                             str(f.get("newvalue") or ""), int(op.key) if op.key.isdigit() else 0))
        for changes in out.values():
            # iTop numbers its change ops in the order it wrote them; the local date text
            # repeats in the autumn hour, so it only orders ops without an id
            changes.sort(key=lambda c: (c.op == 0, c.op, c.date))
        return out

    def get_one(self, itop_class: str, key: str, output_fields: str) -> ItopObject | None:
        """One object by its key (``None``: iTop does not have it, or not for this account)."""
        objects, _count = self.get_page(itop_class, int(key), 1, 1, output_fields)
        return objects[0] if objects else None

    def update(self, itop_class: str, key: str, fields: Mapping[str, Any], comment: str) -> ItopObject:
        """``core/update`` of one object by its key; the object as iTop wrote it.

        A case log is written with ``{"add_item": {"message": …, "format": "text"}}``
        (``AttributeCaseLog`` hands it to ``ormCaseLog::AddLogEntryFromJSON``): one entry
        is added, the others are kept.
        """
        answer = self.call({"operation": "core/update", "class": itop_class, "key": int(key), "fields": dict(fields),
                            "comment": comment, "output_fields": "id,last_update"})
        raw = answer.get("objects") or {}
        item = next(iter(raw.values()), None) if isinstance(raw, dict) else None
        if not isinstance(item, dict) or item.get("code", 0) != 0:
            message = item.get("message") if isinstance(item, dict) else str(raw)[:80]
            # this object only (rights, a deleted ticket): a code, so the pass goes on with the others
            raise ItopError(f"iTop n'a pas mis à jour {itop_class}::{key} : {message}",
                            code=item.get("code") if isinstance(item, dict) and item.get("code") else 100)
        written = item.get("fields")
        return ItopObject(str(item.get("class") or itop_class), str(item.get("key") or key),
                          written if isinstance(written, dict) else {})


def parse_itop_time(value: Any, tz: ZoneInfo) -> datetime | None:
    """iTop's "Y-m-d H:i:s" in the server's time zone, as a UTC instant; empty means not set.

    In the autumn hour that happens twice, iTop's naive time is ambiguous; the first
    occurrence is taken (``fold=0``), the same answer on every poll.
    """
    if value in (None, "", "0000-00-00 00:00:00"):
        return None
    try:
        naive = datetime.strptime(str(value), ITOP_TIME_FORMAT)
        # in UTC: an ambiguous local time compares badly
        return naive.replace(tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):  # year 1 in Europe/Paris is before year 1 in UTC
        raise ValueError(f"not an iTop date-time (Y-m-d H:i:s): {value!r}") from None


__all__ = ["ItopClient", "ItopError", "StatusChange"]
