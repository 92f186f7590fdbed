"""The members directory: who each member is and where its monthly statement goes.

Nothing else in the product knows a referent's e-mail address (tokens name a member, not a
person), so the smallest real thing is a TOML file under the operators' control, named by
``SLALEDGER_MEMBERS_FILE`` (a Compose config or a mounted file), rather than a table with
its own commands: the list is short, changes a few times a year, is reviewed like any
configuration, and holds personal data that does not belong in the event log.

    [members.commune-de-blois]
    name = "Commune de Blois"
    referent = "dsi@ville-blois.fr"

Read whole and validated at load: an unknown key, a missing name or a malformed address is
an error naming the file and the member, never a statement sent nowhere.

It is also the list of members a ticket may name (``directory``): the API, the web form and
the iTop connector resolve a member typed by its id or its name (case and accents ignored)
to its id, and refuse any other with the closest names, so a typo no longer creates a
member. The check lives at those entry points, which read the file; ``sla/`` reads no file.
Tickets already in the log keep the member they were filed with.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from email.headerregistry import Address
from pathlib import Path
from typing import Any

from sla.catalogue import Catalogue, Entry

_MEMBER_ID = re.compile(r"\S{1,128}")  # the tickets' member column: String(128)
_KEYS = {"name", "referent"}
# The example directory: what ``slaledger dev`` and the tests use when no file is named.
EXAMPLE_FILE = Path(__file__).resolve().parents[1] / "infra" / "members.example.toml"


class MembersError(ValueError):
    """The members file is missing, unreadable or wrong; the message says where."""


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    referent: str  # one e-mail address (addr-spec)


def check_address(value: object, where: str) -> str:
    """``value`` as a plain e-mail address (``user@domain.tld``), or a MembersError saying why
    not: a display name, two addresses or a header injection are refused here, not by the
    SMTP server at 06:00 on the 1st."""
    if not isinstance(value, str) or not value.strip():
        raise MembersError(f"{where}: an e-mail address is required")
    text = value.strip()
    try:
        address = Address(addr_spec=text)
    except Exception:  # the email package raises several kinds (defects, IndexError, ValueError)
        raise MembersError(f"{where}: {text!r} is not an e-mail address (expected user@domain.tld)") from None
    if address.addr_spec != text or "." not in address.domain or not address.username:
        raise MembersError(f"{where}: {text!r} is not an e-mail address (expected user@domain.tld)")
    return text


def parse_members(text: str, source: str) -> dict[str, Member]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MembersError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(data) - {"members"}
    if unknown:
        raise MembersError(f"{source}: unknown table(s) {sorted(unknown)}; expected [members.<id>]")
    raw: Any = data.get("members", {})
    if not isinstance(raw, dict):
        raise MembersError(f"{source}: [members] must be a table of members")
    out = {}
    for member_id, entry in raw.items():
        where = f"{source}: members.{member_id}"
        if not _MEMBER_ID.fullmatch(member_id):
            raise MembersError(f"{where}: a member id is 1 to 128 characters without spaces")
        if not isinstance(entry, dict):
            raise MembersError(f"{where}: expected a table with name and referent")
        extra = set(entry) - _KEYS
        if extra:
            raise MembersError(f"{where}: unknown key(s) {sorted(extra)}; expected name and referent")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise MembersError(f"{where}.name: the member's name is required")
        out[member_id] = Member(member_id, name.strip(), check_address(entry.get("referent"), f"{where}.referent"))
    return out


def load_members(path: str | Path) -> dict[str, Member]:
    """The directory in ``path``; a missing or unreadable file is a MembersError too."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MembersError(f"members file {path}: {exc.strerror or exc}") from None
    return parse_members(text, str(path))


def directory(members: dict[str, Member]) -> Catalogue:
    """The members a ticket may name: id → name, to resolve what a person typed."""
    try:
        return Catalogue.of("member", (Entry(m.id, m.name) for m in members.values()))
    except ValueError as exc:  # two members whose names read the same once folded
        raise MembersError(f"members file: {exc}") from None
