"""A small fake iTop: the documented REST/JSON ``core/get`` contract, nothing more.

No iTop server can run in the test environment, so this implements what the connector
relies on, as ``webservices/rest.php`` does in iTop 3.x: parameters from the query string
or the form body (``version``, ``json_data``, ``auth_user``/``auth_pwd`` or
``auth_token``), the checks in rest.php's order with their ``RestResult`` codes,
``core/get`` with an OQL key (``SELECT Class [WHERE last_update >|>= 'Y-m-d H:i:s']``) or a
numeric key, ``output_fields`` checked against the class's attributes, ``limit``/``page``
paging, and ``"objects": null`` when nothing matches. Objects come from the recorded-shape
answers in ``tests/fixtures/itop/``. Failures can be injected (an error code or an HTTP
status for the next requests) and every request is recorded for assertions.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "itop"

_COMMON = ("id", "friendlyname", "ref", "title", "description", "org_id", "org_name", "service_id", "service_name",
           "servicesubcategory_id", "origin", "status", "caller_id", "caller_id_friendlyname", "team_id", "agent_id",
           "start_date", "assignment_date", "last_pending_date", "resolution_date", "close_date", "last_update",
           "pending_reason", "solution", "public_log", "private_log", "priority", "impact", "urgency")
CHANGE_OP = "CMDBChangeOpSetAttributeScalar"
TICKET_CLASSES = ("UserRequest", "Incident")
ATTRIBUTES = {"UserRequest": frozenset((*_COMMON, "request_type", "approver_id")),
              "Incident": frozenset(_COMMON),
              # core/cmdbchangeop.class.inc.php: CMDBChangeOp (change, date, userinfo, user_id, objclass,
              # objkey) → CMDBChangeOpSetAttribute (attcode) → …Scalar (oldvalue, newvalue)
              CHANGE_OP: frozenset(("id", "friendlyname", "change", "date", "userinfo", "user_id", "objclass",
                                    "objkey", "attcode", "oldvalue", "newvalue"))}
# What the ITIL lifecycles set when a ticket enters a status (SetCurrentDate actions).
_DATED_STATUS = {"pending": "last_pending_date", "resolved": "resolution_date", "closed": "close_date"}
VERSIONS = ("1.0", "1.1", "1.2", "1.3")
OPERATIONS = ("list_operations", "core/get", "core/create", "core/update", "core/apply_stimulus", "core/delete",
              "core/get_related", "core/check_credentials")
_OQL = re.compile(r"^\s*SELECT\s+(\w+)(?:\s+WHERE\s+last_update\s*(>=|>)\s*'([0-9: -]{19})')?\s*$", re.I)
_OQL_CHANGES = re.compile(r"^\s*SELECT\s+CMDBChangeOpSetAttributeScalar\s+WHERE\s+objclass\s*=\s*'(\w+)'\s+AND\s+"
                          r"attcode\s*=\s*'(\w+)'\s+AND\s+objkey\s+IN\s*\(\s*(\d+(?:\s*,\s*\d+)*)\s*\)\s*$", re.I)


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


class RestError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class FakeItop:
    def __init__(self, *, users: dict[str, str] | None = None, tokens: set[str] | None = None,
                 paging: bool = True, unreadable: frozenset[str] = frozenset(), read_only: bool = False,
                 extra_fields: frozenset[str] = frozenset()) -> None:
        self.users = users if users is not None else {"sync": "s3cret"}
        self.tokens = tokens or set()
        self.paging = paging  # False: an iTop before 3.0, which ignores limit/page
        self.unreadable = unreadable  # classes the account may not read (e.g. the change log)
        self.read_only = read_only  # the account may not modify tickets
        # custom attributes added to the ticket classes by a site's datamodel (e.g. an SLA field)
        self.attributes = {cls: names | extra_fields if cls in TICKET_CLASSES else names
                           for cls, names in ATTRIBUTES.items()}
        self.now = "2026-11-29 13:00:00"  # the server's clock: dates of what core/update writes
        self.objects: dict[str, dict[str, dict[str, Any]]] = {cls: {} for cls in ATTRIBUTES}
        self.requests: list[dict[str, Any]] = []
        self._failures: list[tuple[int | None, int | None, str]] = []  # (code, http status, message)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- data ---------------------------------------------------------------------------
    def load(self, *names: str) -> FakeItop:
        for name in names:
            for item in (load_fixture(name)["objects"] or {}).values():
                self.put(item["class"], item["key"], dict(item["fields"]))
        return self

    def put(self, itop_class: str, key: str | int, fields: dict[str, Any]) -> None:
        with self._lock:
            self.objects[itop_class][str(key)] = fields

    def update(self, itop_class: str, key: str | int, **fields: Any) -> dict[str, Any]:
        with self._lock:
            obj = self.objects[itop_class][str(key)]
            obj.update(fields)
            return obj

    def add_log_entry(self, itop_class: str, key: str | int, date: str, user_login: str, user_id: str,
                      message: str) -> None:
        """Append a public log entry as iTop does (and bump last_update)."""
        with self._lock:
            obj = self.objects[itop_class][str(key)]
            entries = list(obj.get("public_log", {}).get("entries", []))
            entries.append({"date": date, "user_login": user_login, "user_id": user_id, "message": message,
                            "message_html": f"<p>{message}</p>"})
            obj["public_log"] = {"entries": entries}
            obj["last_update"] = max(obj.get("last_update") or "", date)

    def transition(self, itop_class: str, key: str | int, status: str, date: str) -> dict[str, Any]:
        """Change a ticket's status as iTop's lifecycle does: the dated field of the new
        status, ``last_update``, and a ``CMDBChangeOpSetAttributeScalar`` in the change log
        (``assignment_date`` only the first time: the field the connector reads once)."""
        with self._lock:
            obj = self.objects[itop_class][str(key)]
            old = obj.get("status", "")
            obj["status"] = status
            if status in _DATED_STATUS:
                obj[_DATED_STATUS[status]] = date
            if status == "assigned" and not obj.get("assignment_date"):
                obj["assignment_date"] = date
            obj["last_update"] = max(obj.get("last_update") or "", date)
            ops = self.objects[CHANGE_OP]
            op_id = str(max((int(k) for k in ops), default=1000) + 1)
            ops[op_id] = {"change": str(int(op_id) + 5000), "date": date, "userinfo": "Agent Support", "user_id": "3",
                          "objclass": itop_class, "objkey": str(key), "attcode": "status", "oldvalue": old,
                          "newvalue": status}
            return obj

    def private_log(self, itop_class: str, key: str | int) -> list[dict[str, Any]]:
        with self._lock:
            return list((self.objects[itop_class][str(key)].get("private_log") or {}).get("entries", []))

    # --- failures ------------------------------------------------------------------------
    def fail_next(self, code: int = 100, *, times: int = 1, message: str = "Error: MySQL server has gone away",
                  http_status: int | None = None) -> None:
        """The next ``times`` requests answer this error code (or this HTTP status)."""
        with self._lock:
            self._failures += [(None if http_status else code, http_status, message)] * times

    # --- server --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/itop"

    def start(self) -> FakeItop:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                self._answer(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._answer(self.rfile.read(length))

            def _answer(self, body: bytes) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                if parsed.path != "/itop/webservices/rest.php":
                    self.send_error(404)
                    return
                params = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
                params.update({k: v[-1] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace"),
                                                                          keep_blank_values=True).items()})
                status, answer = fake.handle(params)
                data = json.dumps(answer).encode() if answer is not None else b"<html>Internal error</html>"
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if answer is not None else "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-itop", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeItop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- rest.php ------------------------------------------------------------------------
    def handle(self, params: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
        with self._lock:
            self.requests.append(dict(params, auth_pwd="***") if "auth_pwd" in params else dict(params))
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            code, http_status, message = failure
            if http_status is not None:
                return http_status, None
            return 200, {"code": code, "message": message}
        try:
            return 200, self._rest(params)
        except RestError as exc:
            return 200, {"code": exc.code, "message": f"Error: {exc.message}"}

    def _rest(self, params: dict[str, str]) -> dict[str, Any]:
        if "auth_token" in params:
            if params["auth_token"] not in self.tokens:
                raise RestError(1, "Invalid login")
        else:
            if not params.get("auth_user"):
                raise RestError(5, "Missing parameter 'auth_user'")
            if "auth_pwd" not in params:
                raise RestError(6, "Missing parameter 'auth_pwd'")
            if self.users.get(params["auth_user"]) != params["auth_pwd"]:
                raise RestError(1, "Invalid login")
        version = params.get("version")
        if not version:
            raise RestError(2, "Missing parameter 'version' (e.g. '1.0')")
        if "json_data" not in params or not params["json_data"]:
            raise RestError(3, "Missing parameter 'json_data")
        try:
            request = json.loads(params["json_data"])
        except ValueError:
            request = None
        if not isinstance(request, dict):
            raise RestError(4, "Parameter json_data is not a valid JSON structure")
        if version not in VERSIONS:
            raise RestError(10, f"There is no service available for version '{version}'")
        operation = request.get("operation")
        if not operation:
            raise RestError(100, "Missing parameter 'operation'")
        if operation not in OPERATIONS:
            raise RestError(11, f"Unknown verb '{operation}' in version '{version}'")
        if operation == "core/get":
            return self._core_get(request)
        if operation == "core/update":
            return self._core_update(request, params.get("auth_user") or "token")
        raise RestError(100, f"the fake iTop only implements core/get and core/update, not {operation}")

    def _core_update(self, request: dict[str, Any], user: str) -> dict[str, Any]:
        """core/update by id: scalar fields, and a case log's ``add_item`` (one entry
        appended, as ``ormCaseLog::AddLogEntryFromJSON``; ``format`` defaults to html)."""
        itop_class = request.get("class")
        if itop_class not in TICKET_CLASSES:
            raise RestError(100, f"class: Unknown class '{itop_class}'")
        if self.read_only:
            raise RestError(1, f"The current user does not have enough permissions for updating data of class "
                               f"{itop_class}")
        key = request.get("key")
        if not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
            raise RestError(100, "key: only an id is implemented by the fake iTop for core/update")
        fields = request.get("fields")
        if not isinstance(fields, dict) or not fields:
            raise RestError(100, "Missing parameter 'fields'")
        for name, value in fields.items():
            if name not in self.attributes[itop_class] or name in ("id", "friendlyname", "ref"):
                raise RestError(100, f"fields: invalid attribute code '{name}' for class '{itop_class}'")
            if name in ("public_log", "private_log"):
                item = value.get("add_item") if isinstance(value, dict) else None
                if not isinstance(item, dict) or not isinstance(item.get("message"), str):
                    raise RestError(100, f"{name}: a case log takes {{\"add_item\": {{\"message\": …}}}}")
                if item.get("format", "html") not in ("html", "text"):
                    raise RestError(100, f"{name}: unknown format {item['format']!r}")
        with self._lock:
            obj = self.objects[itop_class].get(str(key))
            if obj is None:
                raise RestError(100, f"key: No item found with criteria: {key}")
            for name, value in fields.items():
                if name in ("public_log", "private_log"):
                    item = value["add_item"]
                    entries = list((obj.get(name) or {}).get("entries", []))
                    text = item["message"]
                    entries.append({"date": self.now, "user_login": user, "user_id": "99", "message": text,
                                    "message_html": f"<p>{text}</p>" if item.get("format", "html") == "text"
                                    else text, "format": item.get("format", "html")})
                    obj[name] = {"entries": entries}
                else:
                    obj[name] = value
            obj["last_update"] = max(obj.get("last_update") or "", self.now)  # a ticket's OnUpdate sets it
            names = [f.strip() for f in str(request.get("output_fields", "id")).split(",") if f.strip()]
            out = {n: self._value(str(key), obj, n) for n in names if n in self.attributes[itop_class]}
        return {"objects": {f"{itop_class}::{key}": {"code": 0, "message": "updated", "class": itop_class,
                                                    "key": str(key), "fields": out}},
                "code": 0, "message": None}

    def _core_get(self, request: dict[str, Any]) -> dict[str, Any]:
        itop_class = request.get("class")
        if not itop_class:
            raise RestError(100, "Missing parameter 'class'")
        if itop_class not in ATTRIBUTES:
            raise RestError(100, f"class: Unknown class '{itop_class}'")
        if itop_class in self.unreadable:
            raise RestError(1, f"The current user does not have enough permissions for exporting data of class "
                               f"{itop_class}")
        if "key" not in request:
            raise RestError(100, "Missing parameter 'key'")
        fields_spec = request.get("output_fields", "*")
        attributes = self.attributes[itop_class]
        fields = sorted(attributes) if fields_spec in ("*", "*+") else [
            f.strip() for f in str(fields_spec).split(",") if f.strip()]
        for name in fields:
            if name not in attributes:
                raise RestError(100, f"output_fields: invalid attribute code '{name}' for class '{itop_class}'")
        try:
            limit = int(request.get("limit", 0))
            page = int(request.get("page", 0))
        except (TypeError, ValueError):
            raise RestError(13, "The request page number is not valid. It must be an integer greater than 0") from None
        if page < 0 or limit < 0:
            raise RestError(13, "The request page number is not valid. It must be an integer greater than 0")
        with self._lock:
            rows = [(k, dict(v)) for k, v in sorted(self.objects[itop_class].items(), key=lambda kv: int(kv[0]))]
        key = request["key"]
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            rows = [(k, v) for k, v in rows if k == str(key)]
        elif isinstance(key, str) and itop_class == CHANGE_OP:
            match = _OQL_CHANGES.match(key)
            if not match:
                raise RestError(100, f"OQL not understood by the fake iTop: {key}")
            objclass, attcode = match.group(1), match.group(2)
            keys = {k.strip() for k in match.group(3).split(",")}
            rows = [(k, v) for k, v in rows
                    if v["objclass"] == objclass and v["attcode"] == attcode and v["objkey"] in keys]
        elif isinstance(key, str):
            match = _OQL.match(key)
            if not match:
                raise RestError(100, f"OQL not understood by the fake iTop: {key}")
            if match.group(1) != itop_class:
                raise RestError(100, f"OQL class {match.group(1)} does not match class {itop_class}")
            if match.group(2):
                op, bound = match.group(2), match.group(3)
                rows = [(k, v) for k, v in rows
                        if (v.get("last_update") or "") > bound or (op == ">=" and v.get("last_update") == bound)]
        else:
            raise RestError(100, "key: only an OQL query or an id is implemented by the fake iTop")
        if self.paging and limit > 0:
            offset = limit * max(0, page - 1)
            rows = rows[offset:offset + limit]
        objects = {f"{itop_class}::{k}": {"code": 0, "message": "", "class": itop_class, "key": k,
                                           "fields": {n: self._value(k, v, n) for n in fields}} for k, v in rows}
        return {"objects": objects or None, "code": 0, "message": f"Found: {len(objects)}"}

    @staticmethod
    def _value(key: str, obj: dict[str, Any], name: str) -> Any:
        if name == "id":
            return key
        if name == "friendlyname":
            return obj.get("ref", obj.get("change", key))
        if name in ("public_log", "private_log"):
            return obj.get(name) or {"entries": []}
        return obj.get(name, "")


@contextmanager
def fake_itop(*fixtures: str, **options: Any) -> Iterator[FakeItop]:
    with FakeItop(**options).load(*fixtures) as fake:
        yield fake


class ListPublisher:
    """In place of the Kafka publisher (``slaledger.itop.sync.Publisher``): what was sent,
    acknowledged on flush (``fail``: the broker is down), and what was set aside."""

    def __init__(self, *_: object, fail: bool = False, **__: object) -> None:
        self.buffer: list[Any] = []
        self.sent: list[Any] = []
        self.dead: list[tuple[Any, str, str]] = []  # (filing, reason, iTop ref) dead-lettered
        self.fail = fail

    def send(self, command: Any) -> None:
        self.buffer.append(command)

    def dead_letter(self, command: Any, reason: str, ref: str) -> None:
        self.dead.append((command, reason, ref))

    def flush(self) -> None:
        if self.fail:
            from kafka.errors import KafkaTimeoutError

            raise KafkaTimeoutError("broker down")
        self.sent += self.buffer
        self.buffer = []

    def close(self) -> None:
        pass
