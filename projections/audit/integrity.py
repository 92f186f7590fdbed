"""The integrity checks of the log as it is read: the archive's SHA-256 chain recomputed
row by row (``ChainVerifier``), one ticket's rows against the Merkle tree
(``TicketVerifier``: its cost follows the ticket, O(events × log N)), a topic against the
archive (``TopicVerifier``: same bytes for the same event id, same order, nothing missing,
nothing unknown; re-sends told from tampering). Each finding is one French line.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from sla.events import Event, decode_event

from .. import merkle, tree
from ..archive_hash import GENESIS_HASH, chain_hash
from ..evidence import Leaf
from ..models import ARCHIVE, ARCHIVE_HEAD, CHECKPOINTS, TICKETS
from .sources import LogRecord


@dataclass
class Finding:
    kind: str  # altered | missing | duplicated | reordered | unknown | unreadable
    message: str  # French, for the report

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}



class ChainVerifier:
    """Recomputes the archive's hash chain as rows stream by.

    A row whose own hash does not match its content was altered; a row whose link points
    to a hash never seen follows a deleted row (missing); one pointing to an older row
    was moved (reordered); an event id seen twice was duplicated. Each finding is
    reported once and the check continues from the stored hash, so one tampering does
    not drown the report.
    """

    def __init__(self) -> None:
        self.prev = GENESIS_HASH
        self.findings: list[Finding] = []
        self.seen_ids: set[str] = set()
        self.seen_hashes: set[str] = {GENESIS_HASH}
        self.last_seq: int | None = None

    def check(self, record: LogRecord, event_id: str | None) -> None:
        seq = record.source.get("archive_seq")
        stored_prev = record.prev_hash or ""
        if record.hash != chain_hash(stored_prev, record.raw):
            self.findings.append(Finding("altered", f"Archive, ligne {seq} : le contenu ne correspond plus à "
                                                    "son empreinte (événement modifié)."))
        if stored_prev != self.prev:
            if stored_prev in self.seen_hashes:
                self.findings.append(Finding("reordered", f"Archive, ligne {seq} : l'événement n'est plus à sa "
                                                          "place dans la chaîne (ordre modifié)."))
            else:
                self.findings.append(Finding("missing", f"Archive, ligne {seq} : l'événement qui la précédait "
                                                        "dans la chaîne a disparu (événement supprimé)."))
        if event_id is not None:
            if event_id in self.seen_ids:
                self.findings.append(Finding("duplicated", f"Archive, ligne {seq} : l'événement {event_id} "
                                                           "figure deux fois."))
            self.seen_ids.add(event_id)
        self.prev = record.hash or ""
        self.seen_hashes.add(self.prev)
        self.last_seq = seq

    def finish(self, engine: Engine | None) -> None:
        """The archive must end where the projector last wrote it (its recorded head)."""
        if engine is None:
            return
        with engine.connect() as conn:
            head = conn.scalar(select(CHECKPOINTS.c.offset).where(CHECKPOINTS.c.topic == ARCHIVE_HEAD))
        if head is not None and (self.last_seq or 0) < head:
            self.findings.append(Finding("missing", f"Archive : elle s'arrête à la ligne {self.last_seq or 0} alors "
                                                    f"que la dernière ligne écrite était la {head} (lignes finales "
                                                    "supprimées)."))


class TicketVerifier:
    """One ticket's archive rows against the Merkle tree: each row's envelope against its
    stored leaf (altered), leaves in row order (reordered), an event or a leaf twice
    (duplicated), fewer rows than the projection applied or an archive cut short (missing).
    O(rows × log N): the rows of other tickets are not read."""

    def __init__(self, engine: Engine, ticket_id: str) -> None:
        self.engine, self.ticket_id = engine, ticket_id
        self.rows: list[tuple[LogRecord, str | None]] = []

    def check(self, record: LogRecord, event_id: str | None) -> None:
        self.rows.append((record, event_id))

    def leaves(self) -> list[Leaf]:
        return [Leaf(eid or "?", r.leaf_index, r.raw, self.ticket_id) for r, eid in self.rows]

    def finish(self) -> list[Finding]:
        out: list[Finding] = []
        with self.engine.connect() as conn:
            stored = tree.leaves(conn, [r.leaf_index for r, _ in self.rows if r.leaf_index is not None])
            version = conn.scalar(select(TICKETS.c.version).where(TICKETS.c.ticket_id == self.ticket_id))
            head = conn.scalar(select(CHECKPOINTS.c.offset).where(CHECKPOINTS.c.topic == ARCHIVE_HEAD))
            last = conn.scalar(select(func.max(ARCHIVE.c.seq)))
        ids: set[str] = set()
        previous = -1
        for record, eid in self.rows:
            seq, leaf = record.source.get("archive_seq"), record.leaf_index
            if leaf is None or leaf not in stored:
                out.append(Finding("unknown", f"Archive, ligne {seq} : l'événement n'a pas de feuille dans "
                                              "l'arbre de Merkle (ajouté hors de l'archive)."))
            elif stored[leaf] != merkle.leaf_hash(record.raw):
                out.append(Finding("altered", f"Archive, ligne {seq} : le contenu ne correspond plus à sa feuille "
                                              "de l'arbre de Merkle (événement modifié)."))
            if (eid is not None and eid in ids) or (leaf is not None and leaf == previous):
                out.append(Finding("duplicated", f"Archive, ligne {seq} : l'événement {eid} figure deux fois."))
            elif leaf is not None and leaf < previous:
                out.append(Finding("reordered", f"Archive, ligne {seq} : l'événement n'est plus à sa place "
                                                "(ordre modifié)."))
            if eid is not None:
                ids.add(eid)
            previous = leaf if leaf is not None else previous
        if version is not None and len(ids) < version:
            out.append(Finding("missing", f"Ticket {self.ticket_id} : {len(ids)} événement(s) dans l'archive alors "
                                          f"que {version} ont été appliqués (événement supprimé)."))
        if head is not None and (last or 0) < head:
            out.append(Finding("missing", f"Archive : elle s'arrête à la ligne {last or 0} alors que la dernière "
                                          f"ligne écrite était la {head} (lignes finales supprimées)."))
        return out


# Records of a partition within which a later copy of an event is recognised when the topic
# is replayed without its archive. A copy is written again by a worker that crashed before
# storing what it had decided (the batch since its last stored position, at most 2,000
# commands: measured, a few hundred records after a SIGKILL) or by a producer retry (the
# next records): 20,000 records is ten such batches (about 10 MiB for 4 partitions). With
# the archive, every copy is found, however far: the archive names the first one.
RESEND_WINDOW = 20_000
# Topic records looked up in the archive per round trip.
ARCHIVE_PAGE = 2_000


@dataclass(frozen=True)
class _Pending:
    """A topic record waiting for its archive row (``TopicVerifier.flush``)."""

    event_id: str
    ticket_id: str
    partition: int
    raw: bytes
    content: int
    where: str


class TopicVerifier:
    """Checks a topic against the archive: same bytes per event id, same order, nothing
    missing, nothing the archive does not know; and tells re-sends from tampering.

    Memory does not follow the log (#31): the archive is read in pages of the event ids
    just read (``ARCHIVE_PAGE``), a bit per archive row says it was found (the missing ones
    are named at the end), and the order is checked per partition: a partition is appended
    to the archive in its own order by the one projector, so an event whose archive row
    comes before the last one found in its partition was moved (« reordered », per ticket
    as before; a stricter check than per ticket: two tickets' events swapped in a partition
    are found too). A later copy of an event (same id) is a re-send when it has the same
    bytes or the same content but its times (a command decided again after a crash),
    otherwise an alteration: compared with the last ``window`` records of its partition, and
    beyond them, with the archive's. Without the archive only the window is looked at: a
    copy further back than ``window`` records is not recognised (the report says the topic
    is not verified then), and a ticket summarized at its closure would count a filing
    re-sent that far as another open ticket."""

    def __init__(self, engine: Engine | None, window: int = RESEND_WINDOW) -> None:
        self.engine = engine  # None: only copies that differ are found (no archive to compare)
        self.window = window
        self.findings: list[Finding] = []
        # per partition: event id → hash of its content, for its last `window` records (same
        # bytes give the same content: one hash tells both kinds of re-send)
        self.recent: dict[int, dict[int, int]] = defaultdict(dict)
        self.recent_order: dict[int, deque[int]] = defaultdict(deque)
        self.pending: list[_Pending] = []
        self.found = bytearray()  # bit per archive seq: its event was read
        self.found_count = 0
        self.last_seq: dict[int, int] = {}  # per partition: the greatest archive seq found
        self.reordered: set[str] = set()  # tickets reported (one finding each)
        # Later copies of an event that every reader ignores (the first copy counts): the same
        # bytes, or the same event written again after a worker crash with other times.
        # Reported, not fatal; any other difference is an alteration.
        self.resent = 0

    def check(self, record: LogRecord, event: Event | None) -> bool:
        """Whether the record is a later copy of an event already read (a re-send)."""
        if event is None:
            return False
        eid = event.event_id.int
        partition = record.source.get("partition", 0)
        content = _content_hash(event)
        recent = self.recent[partition]
        first = recent.get(eid)
        if first is not None:
            return self._later_copy(first == content, str(event.event_id), record.where())
        recent[eid] = content
        order = self.recent_order[partition]
        order.append(eid)
        if len(order) > self.window:
            del recent[order.popleft()]
        if self.engine is not None:
            self.pending.append(_Pending(str(event.event_id), event.ticket_id, partition, record.raw, content,
                                         record.where()))
            if len(self.pending) >= ARCHIVE_PAGE:
                self.flush()
        return False

    def _later_copy(self, same: bool, eid: str, where: str) -> bool:
        if same:
            self.resent += 1
        else:
            self.findings.append(Finding("altered", f"Topic {where} : l'événement {eid} figure deux "
                                                    "fois avec des contenus différents."))
        return True

    def flush(self) -> None:
        """The pending records against their archive rows, in one round trip."""
        pending, self.pending = self.pending, []
        if not pending or self.engine is None:
            return
        with self.engine.connect() as conn:
            rows = {eid: (seq, envelope) for seq, eid, envelope in conn.execute(
                select(ARCHIVE.c.seq, ARCHIVE.c.event_id, ARCHIVE.c.envelope)
                .where(ARCHIVE.c.event_id.in_({p.event_id for p in pending})))}
        for p in pending:
            row = rows.get(p.event_id)
            if row is None:
                self.findings.append(Finding("unknown", f"Le topic contient l'événement {p.event_id}, absent de "
                                                        "l'archive."))
                continue
            seq, envelope = row
            archived = envelope.encode()
            if self._found(seq):  # a copy further back than the window: the archive has the first
                same = archived == p.raw or _content_hash(decode_event(archived)) == p.content
                self._later_copy(same, p.event_id, p.where)
                continue
            if archived != p.raw:
                self.findings.append(Finding("altered", f"L'événement {p.event_id} du topic diffère de l'archive "
                                                        "(événement modifié)."))
            if seq < self.last_seq.get(p.partition, -1):
                if p.ticket_id not in self.reordered:
                    self.reordered.add(p.ticket_id)
                    self.findings.append(Finding("reordered", f"Ticket {p.ticket_id} : l'ordre des événements du "
                                                              "topic diffère de l'archive."))
            else:
                self.last_seq[p.partition] = seq

    def _found(self, seq: int) -> bool:
        """Mark an archive row as found; whether it already was."""
        byte, bit = divmod(seq, 8)
        if byte >= len(self.found):
            self.found.extend(bytes(max(byte + 1 - len(self.found), len(self.found))))
        if self.found[byte] >> bit & 1:
            return True
        self.found[byte] |= 1 << bit
        self.found_count += 1
        return False

    def finish(self) -> tuple[list[Finding], str | None]:
        if self.engine is None:
            return self.findings, None
        self.flush()
        with self.engine.connect() as conn:
            head = conn.scalar(select(ARCHIVE.c.hash).order_by(ARCHIVE.c.seq.desc()).limit(1))
            rows = conn.scalar(select(func.count()).select_from(ARCHIVE))
            if rows != self.found_count:  # name the rows never read, in pages
                result = conn.execution_options(yield_per=ARCHIVE_PAGE).execute(
                    select(ARCHIVE.c.seq, ARCHIVE.c.event_id).order_by(ARCHIVE.c.seq))
                for seq, eid in result:
                    byte, bit = divmod(seq, 8)
                    if byte >= len(self.found) or not self.found[byte] >> bit & 1:
                        self.findings.append(Finding("missing", f"L'événement {eid} de l'archive manque dans "
                                                                "le topic."))
        return self.findings, head


def _content_hash(event: Event) -> int:
    """The event without its times, hashed: a command decided again after a worker crash
    yields the same event (same id, type, actor, payload) stamped with the time of the
    second decision. Python's hash (SipHash, keyed per process): compared within one run."""
    return hash((event.event_id.int, str(event.type), event.ticket_id, event.actor, event.schema_version,
                 repr(event.payload)))

