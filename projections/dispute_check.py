"""The offline check of a dispute file: ``slaledger audit check-file`` and the standalone
``docs/verify_dispute_file.py`` run this module, and nothing else (one code path).

It needs the file, the operator's public key, ``cryptography`` and slaledger's pure code
(``sla/``, ``projections.merkle``, ``projections.ticket_history``): no database, no broker,
no other package, so a member's expert can run it from the source alone. Nothing the file
says is taken on trust:

- the head: a C2SP checkpoint (signed note) whose Ed25519 signature line is the operator's
  key's, with every readable copy beside it equal to the note's values, or a head of the
  former JSON form (its signature over the canonical JSON of its fields); its key id; and,
  when the member names witnesses, their C2SP ``tlog-cosignature`` lines (a checkpoint no
  witness saw may be a view shown to this member alone);
- each event: its readable fields against its archived bytes, its inclusion proof in the
  signed tree (RFC 9162 §2.1.3.2), the ticket it is shown under;
- the ticket's whole history: the events shown, in their order, hash to the entry that the
  signed ticket map holds for the ticket (``projections.ticket_map``): nothing missing in
  the middle or at the end, nothing reordered, nothing shown twice;
- the header (filing time, member, kind, product, channel, subject): derived from the proven
  events;
- every clock, deadline, verdict and explanation: re-folded from the proven events by
  ``sla/`` (the worker's own fold) with the policy text quoted in the file, whose SHA-256
  the head signs.

Malformed input (a float where an integer is due, a key twice, ``NaN``, a list for an
object, bad hex…) is a ``FileError``: one line and exit 2, never a traceback. What a member
reads is in French.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sla import french
from sla.clock import Clock, evaluate
from sla.errors import PolicyError
from sla.events import Event, EventDecodeError, EventType, decode_event, format_instant, parse_instant
from sla.explain import clock_view, explanation
from sla.log_names import CHECKPOINT_SCHEMA, TREE_HEAD_SCHEMA
from sla.policy import Policy, parse_policy
from sla.ticket import Ticket
from sla.view import antedated

from . import checkpoint, merkle
from .ticket_history import history_hash, map_leaf

FILE_SCHEMA = "slaledger.dispute-file/1"
HEAD_SIGNED = ("schema", "tree_size", "root_hash", "timestamp", "policy_versions", "key_id", "ticket_map_root")
HEADER = ("filed_at", "member", "kind", "product", "channel", "subject")
MAX_INT = 2**63 - 1


class FileError(ValueError):
    """A file or key that cannot be read as one: one line, in French, naming where."""


# --- strict reading -----------------------------------------------------------------------------

def _no_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FileError(f"la clé {key!r} figure deux fois dans un même objet")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise FileError(f"{name} n'est pas un nombre JSON")


def load_json(text: str | bytes, what: str) -> Any:
    """JSON as the RFC says it (no NaN/Infinity, no key twice), or a FileError."""
    try:
        return json.loads(text, object_pairs_hook=_no_twice, parse_constant=_no_constant)
    except FileError as exc:
        raise FileError(f"{what} : {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise FileError(f"{what} : JSON illisible ({str(exc) or type(exc).__name__})") from None


def _key(obj: dict[str, Any], name: str, where: str) -> Any:
    """A field the file must carry (null when it says nothing): an absent one is not read as null."""
    if name not in obj:
        raise FileError(f"{where}.{name} : champ absent")
    return obj[name]


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FileError(f"{where} : un objet est attendu, trouvé {_kind(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise FileError(f"{where} : une liste est attendue, trouvé {_kind(value)}")
    return value


def _int(value: Any, where: str, high: int = MAX_INT) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise FileError(f"{where} : un entier de 0 à {high} est attendu, trouvé {_kind(value)}")
    return value


def _str(value: Any, where: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise FileError(f"{where} : une chaîne est attendue, trouvé {_kind(value)}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise FileError(f"{where} : true ou false est attendu, trouvé {_kind(value)}")
    return value


def _hex32(value: Any, where: str) -> bytes:
    text = _str(value, where)
    if len(text) != 64 or text.strip("0123456789abcdef"):
        raise FileError(f"{where} : 64 chiffres hexadécimaux (minuscules) sont attendus")
    return bytes.fromhex(text)


def _path(value: Any, where: str) -> list[bytes]:
    items = _list(value, where)
    if len(items) > 64:
        raise FileError(f"{where} : un chemin d'inclusion a 64 nœuds au plus")
    return [_hex32(p, f"{where}[{i}]") for i, p in enumerate(items)]


def _instant(value: Any, where: str) -> datetime:
    try:
        return parse_instant(_str(value, where), where)
    except EventDecodeError:
        raise FileError(f"{where} : une date ISO 8601 avec son décalage UTC est attendue") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "un booléen", int: "un entier", float: "un nombre décimal", str: "une chaîne",
             list: "une liste", dict: "un objet"}
    shown = repr(value) if isinstance(value, int | float | bool) else ""
    return f"{names.get(type(value), type(value).__name__)} {shown}".strip()


# --- the head -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Head:
    tree_size: int
    root: bytes
    ticket_map_root: bytes | None
    versions: list[dict[str, Any]]  # id, effective_from, sha256 (absent in heads before #26)
    head_id: int | None
    signed: bytes
    signature: bytes
    key_id: str
    # a checkpoint's: the log's name, its signature line and the witnesses' (None, None, () for a JSON head)
    origin: str | None = None
    line: checkpoint.SignatureLine | None = None
    cosignatures: tuple[checkpoint.SignatureLine, ...] = ()
    copies_differ: tuple[str, ...] = ()  # readable copies beside a checkpoint that its note does not say
    signed_at: datetime | None = None


def _versions(raw: Any, where: str) -> list[dict[str, Any]]:
    versions = []
    for i, v in enumerate(_list(raw, where)):
        at = f"{where}[{i}]"
        item = _obj(v, at)
        if set(item) - {"id", "effective_from", "sha256"}:
            raise FileError(f"{at} : champ inconnu")
        _str(item.get("id"), f"{at}.id")
        _instant(item.get("effective_from"), f"{at}.effective_from")
        if "sha256" in item:
            _hex32(item["sha256"], f"{at}.sha256")
        versions.append(item)
    return versions


CHECKPOINT_FIELDS = ("timestamp", "policy_versions", "key_id", "ticket_map_root")  # its extension lines


def differing_copies(data: Mapping[str, Any], signed: Mapping[str, Any]) -> list[str]:
    """The fields written beside a signed note whose readable copy is not the signed value.
    Only the note counts: a copy that says otherwise is a modified file, refused here and by
    ``heads.SignedHead.from_dict`` alike (one comparison for both)."""
    return [name for name, value in signed.items() if name in data and data[name] != value]


def read_checkpoint(data: dict[str, Any], where: str) -> Head:
    """A head published as a C2SP checkpoint: only its signed note counts; the readable
    copies written beside it must say the same."""
    note_text = _str(data.get("checkpoint"), f"{where}.checkpoint")
    try:
        note = checkpoint.parse_note(note_text)
        point = checkpoint.parse_checkpoint(note.text)
    except checkpoint.NoteError as exc:
        raise FileError(f"{where}.checkpoint : {exc}") from None
    ext = point.extensions
    unknown = sorted(set(ext) - set(CHECKPOINT_FIELDS))
    if unknown:
        raise FileError(f"{where}.checkpoint : ligne d'extension inconnue {unknown[0]!r}")
    if checkpoint.checkpoint_text(point.origin, point.size, point.root, ext) != note.text:
        raise FileError(f"{where}.checkpoint : le texte n'est pas la forme canonique de ses champs")
    signed_at = _instant(ext.get("timestamp"), f"{where}.checkpoint timestamp")
    key = _hex32(ext.get("key_id"), f"{where}.checkpoint key_id").hex()
    versions = _versions(ext.get("policy_versions"), f"{where}.checkpoint policy_versions")
    map_root = (None if "ticket_map_root" not in ext
                else _hex32(ext["ticket_map_root"], f"{where}.checkpoint ticket_map_root"))
    mine = [line for line in note.signatures if line.name == point.origin]
    if len(mine) != 1:
        raise FileError(f"{where}.checkpoint : {len(mine)} ligne(s) de signature du journal {point.origin!r}, "
                        "une attendue")
    signed_values = {"origin": point.origin, "tree_size": point.size, "root_hash": point.root.hex(), **ext,
                     "signature": base64.b64encode(mine[0].key_hash + mine[0].signature).decode()}
    unknown = sorted(set(data) - {*signed_values, "schema", "checkpoint", "head_id"})
    if unknown:
        raise FileError(f"{where} : champ inconnu {unknown[0]!r}")
    if "tree_size" in data:
        _int(data["tree_size"], f"{where}.tree_size")
    for name in ("root_hash", "ticket_map_root", "key_id"):
        if name in data:
            _hex32(data[name], f"{where}.{name}")
    differ = tuple(f"{where}.{name} : la copie lisible ({_short(data[name])}) n'est pas la valeur signée dans le "
                   f"point de contrôle ({_short(signed_values[name])}) : fichier modifié"
                   for name in differing_copies(data, signed_values))
    head_id = data.get("head_id")
    if head_id is not None:
        _int(head_id, f"{where}.head_id")
    return Head(point.size, point.root, map_root, versions, head_id, note.text.encode(), mine[0].signature, key,
                point.origin, mine[0], tuple(line for line in note.signatures if line.name != point.origin), differ,
                signed_at)


def read_head(raw: Any, where: str = "evidence.head") -> Head:
    data = _obj(raw, where)
    if data.get("schema") == CHECKPOINT_SCHEMA:
        return read_checkpoint(data, where)
    unknown = sorted(set(data) - {*HEAD_SIGNED, "signature", "head_id"})
    if unknown:
        raise FileError(f"{where} : champ inconnu {unknown[0]!r}")
    if data.get("schema") != TREE_HEAD_SCHEMA:
        raise FileError(f"{where}.schema : {TREE_HEAD_SCHEMA!r} est attendu")
    size = _int(data.get("tree_size"), f"{where}.tree_size")
    root = _hex32(data.get("root_hash"), f"{where}.root_hash")
    map_root = (None if "ticket_map_root" not in data
                else _hex32(data["ticket_map_root"], f"{where}.ticket_map_root"))
    signed_at = _instant(data.get("timestamp"), f"{where}.timestamp")
    key = _hex32(data.get("key_id"), f"{where}.key_id").hex()
    versions = _versions(data.get("policy_versions"), f"{where}.policy_versions")
    try:
        signature = base64.b64decode(_str(data.get("signature"), f"{where}.signature"), validate=True)
    except binascii.Error:
        raise FileError(f"{where}.signature : du base64 est attendu") from None
    head_id = data.get("head_id")
    if head_id is not None:
        _int(head_id, f"{where}.head_id")
    signed = json.dumps({k: data[k] for k in HEAD_SIGNED if k in data}, sort_keys=True, separators=(",", ":"),
                        ensure_ascii=True).encode()
    return Head(size, root, map_root, versions, head_id, signed, signature, key, signed_at=signed_at)


def head_problems(head: Head, public: Ed25519PublicKey) -> list[str]:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        if hashlib.sha256(raw).hexdigest() != head.key_id:
            raise InvalidSignature
        if head.line is not None and head.origin is not None:
            log_key = checkpoint.VerifierKey(head.origin, checkpoint.ED25519, public)
            if not checkpoint.verify_signature(head.signed.decode(), head.line, log_key):
                raise InvalidSignature
        else:
            public.verify(head.signature, head.signed)
    except InvalidSignature:
        return [f"tête d'arbre signée {head.head_id} : la signature ne se vérifie pas avec cette clé publique "
                "(tête falsifiée, modifiée, ou signée d'une autre clé)"]
    return []


def witness_problems(head: Head, witnesses: Sequence[checkpoint.VerifierKey], required: int) -> list[str]:
    """One line when fewer than ``required`` of the given witnesses cosigned the head."""
    if required <= 0:
        return []
    distinct = distinct_witnesses(witnesses)
    seen = [w for w in distinct if head.origin is not None and any(
        checkpoint.verify_cosignature(head.signed.decode(), line, w) is not None for line in head.cosignatures)]
    return witness_shortfall(head.head_id, head.tree_size, seen, required)


def distinct_witnesses(witnesses: Sequence[checkpoint.VerifierKey]) -> list[checkpoint.VerifierKey]:
    """One per public key: a cosignature does not sign the witness's name, so one key under
    two names is one witness."""
    return list({checkpoint.raw_public(w.public): w for w in witnesses}.values())


def witness_threshold(witnesses: Sequence[checkpoint.VerifierKey], required: int | None) -> int:
    """How many of the (distinct) witnesses must have cosigned: ``required``, or one when keys
    are given without it (naming witnesses and requiring none would check nothing)."""
    needed = (1 if witnesses else 0) if required is None else required
    if not 0 <= needed <= len(witnesses):
        raise FileError(f"--witnesses-required {needed} : entre 0 et le nombre de clés de témoins distinctes "
                        f"données ({len(witnesses)})")
    return needed


def witness_shortfall(head_id: int | None, tree_size: int, seen: Sequence[checkpoint.VerifierKey],
                      required: int) -> list[str]:
    """The line saying too few witnesses cosigned a head (none when enough did): a checkpoint
    nobody else saw may be a view shown to this member alone (a split view)."""
    if len(seen) >= required:
        return []
    names = ", ".join(w.name for w in seen) or "aucun"
    return [f"tête d'arbre n° {head_id} ({tree_size} événements) : contresignée par {len(seen)} des témoins "
            f"donnés ({names}), {required} requis : les témoins ne l'ont pas vue, peut-être une vue séparée "
            "(un journal montré à vous seul)"]


# --- one ticket ---------------------------------------------------------------------------------

@dataclass
class Proven:
    event: Event
    entry: dict[str, Any]
    leaf_index: int
    leaf: bytes


SHOWN_FIELDS = ("event_id", "type", "occurred_at", "recorded_at", "actor")


def _entry(raw: Any, where: str) -> tuple[dict[str, Any], bytes, int, list[bytes] | None]:
    """A timeline entry's fields, checked for type: (entry, envelope bytes, leaf index, path or None)."""
    entry = _obj(raw, where)
    for name in SHOWN_FIELDS:
        _str(entry.get(name), f"{where}.{name}")
    for name in ("answer", "antedated", "known_at_as_of"):
        _bool(_key(entry, name, where), f"{where}.{name}")
    try:
        envelope = base64.b64decode(_str(entry.get("envelope_base64"), f"{where}.envelope_base64"), validate=True)
    except binascii.Error:
        raise FileError(f"{where}.envelope_base64 : du base64 est attendu") from None
    index = _int(entry.get("leaf_index"), f"{where}.leaf_index")
    path = entry.get("inclusion_path")
    return entry, envelope, index, None if path is None else _path(path, f"{where}.inclusion_path")


def _shown_differs(ticket_id: str, entry: dict[str, Any], event: Event) -> list[str]:
    """What the file shows of an event that its archived bytes do not say."""
    eid = entry["event_id"]
    archived = {"event_id": str(event.event_id), "type": str(event.type),
                "occurred_at": format_instant(event.occurred_at), "recorded_at": format_instant(event.recorded_at),
                "actor": event.actor}
    out = [f"événement {eid} : son champ « {name} » vaut {entry[name]!r} dans le fichier, {archived[name]!r} "
           "dans ses octets archivés" for name in SHOWN_FIELDS if archived[name] != entry[name]]
    if event.ticket_id != ticket_id:
        out.append(f"événement {eid} : montré sous le ticket {ticket_id!r}, ses octets archivés sont du ticket "
                   f"{event.ticket_id!r}")
    answer = event.type is EventType.CUSTOMER_INFORMED and bool(event.payload.get("answer"))
    if entry["answer"] != answer:
        out.append(f"événement {eid} : {'marqué' if entry['answer'] else 'non marqué'} comme la réponse à la "
                   "demande, ce que ses octets archivés ne disent pas")
    return out


def _history(ticket_id: str, proven: list[Proven], raw: Any, head: Head, where: str) -> list[str]:
    """Nothing missing, added, swapped or shown twice: the proven events, in the file's order,
    against the ticket's entry in the signed map of every ticket's history."""
    out = []
    seen: dict[int, str] = {}
    previous = -1
    for p in proven:
        eid = p.entry["event_id"]
        if p.leaf_index in seen:
            out.append(f"ticket {ticket_id} : l'événement {eid} (feuille {p.leaf_index}) figure deux fois")
        elif p.leaf_index < previous:
            out.append(f"ticket {ticket_id} : l'événement {eid} (feuille {p.leaf_index}) n'est pas à sa place dans "
                       "l'ordre du journal (ordre modifié)")
        seen[p.leaf_index] = eid
        previous = max(previous, p.leaf_index)
    if head.ticket_map_root is None:
        return [*out, f"ticket {ticket_id} : la tête signée ne porte pas de carte des historiques (tête antérieure) : "
                      "complétude de l'historique non prouvée ; demandez un fichier sur une tête récente"]
    if raw is None:
        return [*out, f"ticket {ticket_id} : aucune preuve de complétude de l'historique (history_proof absent)"]
    data = _obj(raw, where)
    ordinal = _int(data.get("ordinal"), f"{where}.ordinal")
    tickets = _int(data.get("tickets"), f"{where}.tickets")
    count = _int(data.get("count"), f"{where}.count")
    signed_hash = _hex32(data.get("history_hash"), f"{where}.history_hash")
    path = _path(data.get("inclusion_path"), f"{where}.inclusion_path")
    if not merkle.verify_inclusion(ordinal, tickets, map_leaf(ticket_id, count, signed_hash), path,
                                   head.ticket_map_root):
        return [*out, f"ticket {ticket_id} : la preuve de complétude ne se vérifie pas contre la carte signée des "
                      "historiques (nombre d'événements ou empreinte d'historique modifiés)"]
    shown = history_hash([p.leaf for p in proven])
    if len(proven) != count:
        out.append(f"ticket {ticket_id} : le fichier montre {len(proven)} événement(s) prouvé(s), l'historique signé "
                   f"du ticket {ticket_id} compte {count} : des événements manquent ou sont en trop")
    elif shown != signed_hash:
        out.append(f"ticket {ticket_id} : les événements montrés ne sont pas l'historique signé du ticket (ordre "
                   "modifié, ou un événement remplacé par un autre)")
    return out


def _fold(ticket_id: str, events: Sequence[Event], keep: Callable[[Event], bool]) -> Ticket:
    ticket, seen = Ticket(ticket_id), set()
    for event in events:
        if event.event_id.int in seen or not keep(event):
            continue
        seen.add(event.event_id.int)
        ticket.apply(event)
    return ticket


def _clocks(ticket: Ticket, policy: Policy, now: datetime) -> list[Clock]:
    if not ticket.exists:
        return []
    try:
        return evaluate(ticket, policy, now)
    except PolicyError:
        return []


def _compare_clocks(ticket_id: str, raw: Any, clocks: list[Clock], where: str, view: str) -> list[str]:
    shown = [_obj(c, f"{where}[{i}]") for i, c in enumerate(_list(raw, where))]
    mine = {c.sla: clock_doc(c) for c in clocks}
    theirs = {}
    for i, doc in enumerate(shown):
        sla = _str(doc.get("sla"), f"{where}[{i}].sla")
        if sla in theirs:
            return [f"ticket {ticket_id} : le délai {sla} figure deux fois ({view})"]
        theirs[sla] = doc
    out = [f"ticket {ticket_id} : le délai {sla} manque au fichier ({view}), les événements prouvés le font courir"
           for sla in mine if sla not in theirs]
    out += [f"ticket {ticket_id} : le délai {sla} du fichier ({view}) ne découle pas des événements prouvés"
            for sla in theirs if sla not in mine]
    for sla in (s for s in mine if s in theirs):
        for key in sorted(set(mine[sla]) | set(theirs[sla])):
            said, found = theirs[sla].get(key, _ABSENT), mine[sla].get(key, _ABSENT)
            if said != found or type(said) is not type(found):
                out.append(f"ticket {ticket_id}, délai {sla} ({view}) : « {key} » vaut {_short(said)} dans le "
                           f"fichier, {_short(found)} recalculé avec la politique citée")
    return out


_ABSENT = object()


def _short(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 120 else text[:117] + "…"


def clock_doc(clock: Clock) -> dict[str, Any]:
    """A clock as the dispute file shows it (``projections.audit.dispute_file``), and as the
    verifier recomputes it."""
    doc = clock_view(clock)
    return {
        "sla": doc["sla"], "title": doc["title"], "contractual": doc["contractual"],
        "verdict": doc["status"], "verdict_fr": french.VERDICT.get(doc["status"], doc["status"]),
        "deadline": doc["deadline"], "rule": doc["rule"], "policy_version": doc["policy_version"],
        "clause": clock.definition.clause, "segments": doc["segments"], "explanation": explanation(clock, live=False),
        "breached_deadlines": doc["breached_deadlines"], "retracted_deadlines": doc["retracted_deadlines"],
        "reading": reading_of(clock),
    }


def reading_of(clock: Clock) -> str | None:
    """How the policy version read the working days that judged this clock (None when no
    calendar did): « jour ouvré » or « jour ouvrable », and whose public holidays."""
    calendar = clock.definition.calendar
    if calendar is None:
        return None
    holidays = calendar.holidays
    pinned = (f"jours fériés de la politique {clock.policy_version.id} ({holidays.first_year}–{holidays.last_year}, "
              f"lundi de Pentecôte {'travaillé' if holidays.whit_monday_worked else 'férié'})"
              if holidays.days else "aucun jour férié")
    return f"{french.READING[calendar.reading]} ; {pinned}"


def quoted_policy(doc: dict[str, Any], head: Head) -> tuple[Policy | None, list[str]]:
    """The policy the head signs, from the texts the file quotes: each signed version's text
    must hash to the signed SHA-256 and read as that version."""
    quoted = {}
    for i, raw in enumerate(_list(doc.get("policy_versions"), "policy_versions")):
        item = _obj(raw, f"policy_versions[{i}]")
        quoted[_str(item.get("id"), f"policy_versions[{i}].id")] = (item.get("text"), f"policy_versions[{i}].text")
    versions, out = [], []
    for signed in head.versions:
        vid = signed["id"]
        if "sha256" not in signed:
            out.append(f"politique {vid} : la tête signée ne porte pas l'empreinte de son texte (tête antérieure) : "
                       "verdicts non recalculés")
            continue
        if vid not in quoted or quoted[vid][0] is None:
            out.append(f"politique {vid} : signée par la tête, son texte manque au fichier : verdicts non recalculés")
            continue
        text = _str(*quoted[vid])
        if hashlib.sha256(text.encode()).hexdigest() != signed["sha256"]:
            out.append(f"politique {vid} : le texte cité n'est pas celui que la tête signe (SHA-256 différent) : "
                       "verdicts non recalculés")
            continue
        try:
            version = parse_policy(text).version(vid)
        except PolicyError as exc:
            out.append(f"politique {vid} : le texte signé ne se lit pas ({exc})")
            continue
        if format_instant(version.effective_from) != format_instant(_instant(signed["effective_from"], vid)):
            out.append(f"politique {vid} : sa date d'effet signée n'est pas celle de son texte")
            continue
        versions.append(version)
    if out or not versions:
        return None, out or ["la tête signée ne porte aucune politique : verdicts non recalculés"]
    return Policy(tuple(sorted(versions, key=lambda v: v.effective_from))), []


def _ticket(doc: dict[str, Any], i: int, head: Head, policy: Policy | None, now: datetime,
            as_of: datetime | None) -> tuple[list[str], int, int, list[Clock]]:
    """(problems, events proven, events not yet signed) of the file's i-th ticket. An event
    recorded after the file's head (its leaf at or past the head's size, no proof) is not yet
    signed: no anomaly when it is among the newest shown — it is folded with the others (the
    file's clocks count it) but proves nothing until a file on a later head does."""
    where = f"tickets[{i}]"
    ticket = _obj(doc["tickets"][i], where)
    ticket_id = _str(ticket.get("ticket_id"), f"{where}.ticket_id")
    timeline = _list(ticket.get("timeline"), f"{where}.timeline")
    problems: list[str] = []
    proven: list[Proven] = []
    pending: list[Event] = []
    for k, raw in enumerate(timeline):
        at = f"{where}.timeline[{k}]"
        entry, envelope, index, path = _entry(raw, at)
        eid = entry["event_id"]
        if path is None and index < head.tree_size:
            problems.append(f"événement {eid} (feuille {index}) : sans preuve d'inclusion alors que la tête signée du "
                            f"fichier couvre {head.tree_size} feuilles : non prouvé")
            continue
        try:
            event = decode_event(envelope)
        except EventDecodeError as exc:
            problems.append(f"événement {eid} : ses octets archivés ne sont pas un événement lisible ({exc})")
            continue
        if path is None:
            problems += _shown_differs(ticket_id, entry, event)
            pending.append(event)
            continue
        if pending:
            problems.append(f"événement {eid} : prouvé, mais montré après un événement pas encore signé (l'ordre du "
                            "journal n'est pas respecté)")
        leaf = merkle.leaf_hash(envelope)
        if not merkle.verify_inclusion(index, head.tree_size, leaf, path, head.root):
            problems.append(f"événement {eid} (feuille {index}) : la preuve d'inclusion échoue contre la racine "
                            "signée (événement modifié, ou preuve d'une autre feuille)")
            continue
        problems += _shown_differs(ticket_id, entry, event)
        proven.append(Proven(event, entry, index, leaf))
    problems += _history(ticket_id, proven, _key(ticket, "history_proof", where), head, f"{where}.history_proof")
    if as_of is None and proven and max(p.event.recorded_at for p in proven) > now:
        problems.append(f"ticket {ticket_id} : le fichier dit juger ses délais le {format_instant(now)}, avant "
                        "l'enregistrement de ses derniers événements prouvés (date du fichier modifiée)")
    events = [p.event for p in proven] + pending
    known = _fold(ticket_id, events, lambda e: as_of is None or e.recorded_at <= as_of)
    derived = {"filed_at": format_instant(known.filed_at) if known.filed_at else None, "member": known.member,
               "kind": known.kind, "product": known.product, "channel": known.channel, "subject": known.subject}
    for name in HEADER:
        if _key(ticket, name, where) != derived[name]:
            problems.append(f"ticket {ticket_id} : « {name} » vaut {_short(ticket[name])} dans le fichier, "
                            f"{_short(derived[name])} d'après les événements prouvés")
    then: list[Clock] = []
    if policy is not None:
        full = _fold(ticket_id, events, lambda e: as_of is not None and e.occurred_at <= as_of)
        then = _clocks(known, policy, now)
        problems += _compare_clocks(ticket_id, ticket.get("clocks"), then, f"{where}.clocks", "vue du fichier")
        if as_of is not None:
            problems += _compare_clocks(ticket_id, _key(ticket, "full_log_view", where), _clocks(full, policy, now),
                                        f"{where}.full_log_view", "vue du journal complet")
        elif _key(ticket, "full_log_view", where) is not None:
            problems.append(f"ticket {ticket_id} : une « vue du journal complet » sans date --as-of dans le fichier")
        flagged = {a["event_id"] for a in antedated(full if as_of is not None else known, policy)}
        for p in proven:
            said = p.entry["antedated"]
            if said != (str(p.event.event_id) in flagged):
                problems.append(f"événement {p.entry['event_id']} : « antidaté » vaut {_short(said)} dans le fichier, "
                                "l'inverse d'après la politique citée")
    return problems, len(proven), len(pending), then


# --- the whole file -----------------------------------------------------------------------------

@dataclass
class Verdict:
    problems: list[str]  # French, one line each
    proven: int  # events proven in the signed archive
    pending: int  # the newest events, recorded after the file's head: not yet signed
    head_id: int | None


def check_dispute_file(doc: Any, public: Ed25519PublicKey, earlier: Any = None) -> tuple[list[str], int]:
    """Every problem of a dispute file (French, one line each) and how many events it proves."""
    verdict = check(doc, public, earlier)
    return verdict.problems, verdict.proven


def check(doc: Any, public: Ed25519PublicKey, earlier: Any = None,
          witnesses: Sequence[checkpoint.VerifierKey] = (), required: int = 0, origin: str | None = None) -> Verdict:
    """The verdict on a dispute file; ``earlier``: a file issued before (the same leaf must
    hold the same bytes in both); ``witnesses``, ``required``: how many of those witnesses
    must have cosigned its head; ``origin``: the log's name when its key was given as a
    verifier key (a checkpoint of another log under the same key is refused). Raises
    FileError for a file that is not one (malformed)."""
    doc = _obj(doc, "le fichier")
    if doc.get("schema") != FILE_SCHEMA:
        raise FileError(f"schema : {FILE_SCHEMA!r} est attendu (pas un fichier de litige)")
    evidence = doc.get("evidence")
    if evidence is None:
        return Verdict(["le fichier ne porte pas de preuves (section evidence absente) : ce n'est pas un fichier "
                        "signé"], 0, 0, None)
    head = read_head(_obj(evidence, "evidence").get("head"))
    problems = [*head.copies_differ, *head_problems(head, public), *witness_problems(head, witnesses, required)]
    if origin is not None and head.origin is not None and head.origin != origin:
        problems.append(f"tête d'arbre : elle est du journal {head.origin!r}, la clé donnée est celle du journal "
                        f"{origin!r}")
    tickets = _list(doc.get("tickets"), "tickets")
    filters = _obj(doc.get("filters"), "filters")
    wanted = _str(_key(filters, "ticket", "filters"), "filters.ticket", optional=True)
    as_of = None if _key(filters, "as_of", "filters") is None else _instant(filters["as_of"], "filters.as_of")
    now = as_of or _instant(doc.get("generated_at"), "generated_at")
    if as_of is None and head.signed_at is not None and now < head.signed_at:
        problems.append(f"le fichier dit juger ses délais le {format_instant(now)}, avant la signature de sa tête "
                        f"({format_instant(head.signed_at)}) : date du fichier modifiée")
    policy, policy_problems = quoted_policy(doc, head)
    problems += policy_problems
    shown_ids = [_str(_obj(t, f"tickets[{i}]").get("ticket_id"), f"tickets[{i}].ticket_id")
                 for i, t in enumerate(tickets)]
    if wanted is not None and shown_ids != [wanted]:
        problems.append(f"le fichier est celui du ticket {wanted} mais montre {len(shown_ids)} ticket(s) : "
                        f"{', '.join(shown_ids) or 'aucun'}")
    if len(set(shown_ids)) != len(shown_ids):
        problems.append("un ticket figure deux fois dans le fichier")
    checked = pending = 0
    shown_clocks: list[tuple[str, str, Clock]] = []
    for i in range(len(tickets)):
        found, proven, newest, clocks = _ticket(doc, i, head, policy, now, as_of)
        problems += found
        checked += proven
        pending += newest
        shown_clocks += [(shown_ids[i], str(tickets[i].get("member")), c) for c in clocks]
    problems += _filters_problems(filters, tickets, shown_ids)
    if policy is not None:
        problems += _summary_problems(doc, shown_clocks)
    if earlier is not None:
        try:
            earlier_problems, _ = check_dispute_file(earlier, public)
        except FileError as exc:
            earlier_problems = [str(exc)]
        if earlier_problems:  # an unproven file proves nothing, a rewrite least of all
            problems.append(f"fichier antérieur : il ne se vérifie pas ({earlier_problems[0]}) ; non comparé")
        else:
            problems += _against_earlier(doc, head, earlier)
    return Verdict(problems, checked, pending, head.head_id)


def _filters_problems(filters: dict[str, Any], tickets: list[Any], shown_ids: list[str]) -> list[str]:
    """A member's or a period's file shows only tickets of that member, filed in that period
    (each ticket's member and filing time are checked against its proven events)."""
    member = _str(filters.get("member"), "filters.member", optional=True)
    start = None if filters.get("from") is None else _instant(filters["from"], "filters.from")
    end = None if filters.get("to") is None else _instant(filters["to"], "filters.to")
    out = []
    for ticket_id, ticket in zip(shown_ids, tickets, strict=True):
        if member is not None and ticket.get("member") != member:
            out.append(f"ticket {ticket_id} : du membre {_short(ticket.get('member'))}, dans un fichier du membre "
                       f"{member!r}")
        filed = ticket.get("filed_at")
        if (start or end) and isinstance(filed, str):
            at = _instant(filed, f"ticket {ticket_id} filed_at")
            if (start and at < start) or (end and at >= end):
                out.append(f"ticket {ticket_id} : déposé le {filed}, hors de la période du fichier")
    return out


def _summary_problems(doc: dict[str, Any], shown: list[tuple[str, str, Clock]]) -> list[str]:
    """The summary table (page 1) recounted from the re-folded clocks of the tickets shown,
    when it counts no ticket the file does not show."""
    hidden = doc.get("closed_tickets_in_summary_only", 0)
    if hidden != 0:
        return []  # closed tickets counted without their events: the table is the operator's word (said by run)
    counts: dict[str, dict[str, Any]] = {}
    for ticket_id, member, clock in shown:
        row = counts.setdefault(clock.sla, {"met": 0, "breached": 0, "retracted": 0, "excluded": 0, "open": 0,
                                            "breaches": []})
        status = str(clock.status)
        row[status if status in ("met", "breached", "retracted", "excluded") else "open"] += 1
        if status == "breached":
            row["breaches"].append({"ticket": ticket_id, "member": member,
                                    "deadline": format_instant(clock.deadline) if clock.deadline else None})
    written = _obj(doc.get("summary", {}), "summary")
    out = []
    for sla in sorted(set(counts) | set(written)):
        mine = counts.get(sla)
        theirs = written.get(sla)
        if mine is None or not isinstance(theirs, dict):
            out.append(f"résumé : l'engagement {sla!r} n'y est pas compté comme d'après les horloges recalculées")
            continue
        decided = mine["met"] + mine["breached"] + mine["retracted"]
        mine["compliance_percent"] = round(100 * (mine["met"] + mine["retracted"]) / decided, 2) if decided else None
        mine["breaches"].sort(key=lambda x: x["ticket"])
        for name, value in mine.items():
            if theirs.get(name) != value:
                out.append(f"résumé, engagement {sla!r} : « {name} » vaut {_short(theirs.get(name))} dans le fichier, "
                           f"{_short(value)} d'après les horloges recalculées")
    return out


def _proven_entries(doc: dict[str, Any]) -> dict[str, tuple[int, bytes]]:
    return {e["event_id"]: (e["leaf_index"], base64.b64decode(e["envelope_base64"]))
            for t in doc["tickets"] for e in t["timeline"] if e.get("inclusion_path") is not None}


def _against_earlier(doc: dict[str, Any], head: Head, earlier: dict[str, Any]) -> list[str]:
    """An append-only log never changes a leaf: the same event at another leaf or with other
    bytes, or two heads of one size with different roots, prove a rewrite. Both files have
    been checked first."""
    out = []
    old = read_head(earlier["evidence"]["head"])
    if (old.tree_size, old.root) == (head.tree_size, head.root) and None not in (
            old.ticket_map_root, head.ticket_map_root) and old.ticket_map_root != head.ticket_map_root:
        out.append(f"les têtes {old.head_id} et {head.head_id} signent le même journal ({head.tree_size} événements) "
                   "avec deux cartes des historiques différentes : l'une cache ou ajoute des événements")
    if old.tree_size == head.tree_size and old.root != head.root:
        out.append(f"les têtes {old.head_id} et {head.head_id} signent toutes deux {head.tree_size} événements avec "
                   "des racines différentes : l'archive a été réécrite")
    before = _proven_entries(earlier)
    for eid, (index, envelope) in _proven_entries(doc).items():
        was = before.get(eid)
        if was is not None and was != (index, envelope):
            out.append(f"événement {eid} : la feuille {index} diffère de celle du fichier antérieur (feuille "
                       f"{was[0]}) : l'archive a été réécrite depuis")
    return out


def read_public_key(path: str) -> Ed25519PublicKey:
    """The operator's Ed25519 public key: PEM, a C2SP verifier key, or its 32 raw bytes (raw,
    hex or base64)."""
    return read_log_key(path)[0]


def read_log_key(path: str) -> tuple[Ed25519PublicKey, str | None]:
    """The operator's public key, and the log's name when the key was given as a C2SP
    verifier key (``name+hash+key``: a checkpoint of another log under that key is refused)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FileError(f"fichier de clé publique {path} : {exc.strerror}") from None
    vkey = _verifier_key(data)
    if vkey is not None:
        return vkey.public, vkey.name
    try:
        if b"-----BEGIN" in data:
            key: Any = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(data if len(data) == 32 else _decode32(data.strip()))
    except (ValueError, TypeError, UnicodeDecodeError, binascii.Error):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise FileError(f"fichier de clé publique {path} : pas une clé publique Ed25519 (PEM, clé de vérification "
                        "C2SP ou 32 octets)")
    return key, None


def _verifier_key(data: bytes) -> checkpoint.VerifierKey | None:
    """The log's C2SP verifier key (algorithm Ed25519), else None."""
    if len(data) == 32 or data.count(b"+") < 2:
        return None
    try:
        vkey = checkpoint.VerifierKey.parse(data.decode("ascii"))
    except (ValueError, UnicodeDecodeError):  # NoteError is a ValueError
        return None
    return vkey if vkey.alg == checkpoint.ED25519 else None


def _decode32(text: bytes) -> bytes:
    try:
        return bytes.fromhex(text.decode("ascii"))
    except ValueError:
        return base64.b64decode(text, validate=True)


def _read_file(path: str) -> Any:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FileError(f"{path} : {exc.strerror}") from None
    return load_json(data, path)


NOT_YET_SIGNED = 3  # the exit code when nothing is wrong but the newest events await the next head


def read_witness_key(value: str) -> checkpoint.VerifierKey:
    """A verifier key (C2SP vkey: a witness's, or a log's for ``witness serve``), given as
    itself or as a file holding it (one line)."""
    text = value
    if "+" not in value:
        try:
            text = Path(value).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise FileError(f"clé de vérification {value} : {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return checkpoint.VerifierKey.parse(text)
    except ValueError as exc:  # NoteError is a ValueError
        raise FileError(f"clé de vérification {value} : {exc}") from None


def run(file: str, public_key: str, earlier: str | None = None, witness_keys: Sequence[str] = (),
        required: int | None = None) -> int:
    """Check a file and print the verdict: 0 verified, 1 problems (each named), 2 unreadable
    input (one line on stderr), 3 nothing wrong but its newest events not yet signed (so not
    proven). What ``audit check-file`` and the standalone script do. Witness keys given
    without ``required``: one of them must have cosigned."""
    try:
        public, origin = read_log_key(public_key)
        witnesses = distinct_witnesses([read_witness_key(k) for k in witness_keys])
        needed = witness_threshold(witnesses, required)
        doc = _read_file(file)
        verdict = check(doc, public, _read_file(earlier) if earlier else None, witnesses, needed, origin)
    except FileError as exc:
        print(f"slaledger: error: {exc}", file=sys.stderr)
        return 2
    for line in verdict.problems:
        print(f"ÉCHEC : {line}")
    if verdict.problems:
        print(f"{len(verdict.problems)} problème(s) : ce fichier de litige n'est pas ce que l'archive signée contient")
        return 1
    print(f"OK : signature valide, {verdict.proven} événement(s) prouvé(s) dans l'archive signée, historique complet "
          "de chaque ticket, en-têtes et verdicts recalculés avec la politique citée")
    hidden = doc.get("closed_tickets_in_summary_only") if isinstance(doc, dict) else None
    if hidden:
        print(f"NON RECALCULÉ : le résumé compte {hidden} ticket(s) clos que le fichier ne montre pas ; ses comptes "
              "sont ceux de l'exploitant (demandez le fichier de chacun de ces tickets pour les prouver)")
    if verdict.pending:
        print(f"PAS ENCORE SIGNÉ : {verdict.pending} événement(s) enregistré(s) après la tête signée n° "
              f"{verdict.head_id} (le dossier les montre sans preuve : ni eux ni les verdicts qui en dépendent ne sont "
              "prouvés par ce fichier) ; l'exploitant signe une nouvelle tête quelques secondes après chaque "
              "événement : téléchargez le dossier à nouveau pour qu'ils y soient prouvés.")
        return NOT_YET_SIGNED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="verify_dispute_file.py",
                                     description="Vérifie hors ligne un fichier de litige slaledger (JSON).")
    parser.add_argument("file", help="le fichier de litige (JSON)")
    parser.add_argument("public_key", help="la clé publique de l'opérateur (PEM ou 32 octets)")
    parser.add_argument("--earlier", metavar="FILE", help="un fichier de litige reçu avant")
    parser.add_argument("--witness-key", action="append", default=[], metavar="VKEY|FICHIER",
                        help="la clé (C2SP vkey) d'un témoin ; répétable")
    parser.add_argument("--witnesses-required", type=int, default=None, metavar="N",
                        help="combien de ces témoins doivent avoir contresigné la tête (1 par défaut avec des témoins)")
    args = parser.parse_args(argv)
    return run(args.file, args.public_key, args.earlier, args.witness_key, args.witnesses_required)
