"""The SQL projector: follow the events topic and apply it to SQL (``projection``).

One transaction per batch updates the rows, appends to the archive and moves the
checkpoint; on start it seeks each partition to its checkpoint + 1 (Kafka-committed
offsets are not used). A record the database refuses is set aside in ``dead_letters``.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import structlog
from kafka import KafkaConsumer
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from sla.events import Event
from sla.log_names import DEAD_LETTERS, EVENTS
from sla.policy import Policy
from streams.kafka_security import client_options
from streams.kafka_tools import partitions_of, true_end_offsets

from .head_signer import HeadSigner
from .lag import consumer_lag
from .projection import Incoming, Projection, checkpoints

log = structlog.get_logger(__name__)
HEAD_CHECK = 1.0  # seconds between two looks at the head schedule (two small queries)
POLL, CATCH_UP = 2000, 10_000  # records per poll; per batch while there is a backlog
IDLE = 0.5  # seconds without a word from the reader process before the projector's loop looks around
QUIET_LOOK = 30.0  # seconds without a record from the reader before asking whether records wait


def consume(bootstrap: str, start: dict[tuple[str, int], int], *, follow: bool, topics: tuple[str, ...] = (EVENTS,),
            batch: int = POLL, catch_up: int = CATCH_UP, idle_stop: float | None = None,
            in_child: bool | None = None, waiting: Callable[[], bool] | None = None) -> Iterator[list[Incoming]]:
    """``read``'s batches, read by a forked child process while this one projects the
    previous batch (``in_child``; by default when called from the main thread: ``slaledger
    project`` and ``--rebuild``, not the projector thread of ``slaledger dev``, which shares
    its process with the worker). kafka-python fetches and parses records in Python, about
    a fifth of what projecting one costs: on two cores the two overlap instead of adding up
    (#31). The pipe holds one batch at a time: the child reads ahead by one batch at most.

    Following, a reader that has handed over nothing for QUIET_LOOK seconds while records
    wait (``waiting``: asked then, at most once per QUIET_LOOK) is started anew from where
    it was: after a whole cluster's restart, kafka-python's reader was seen to get nothing
    more, for minutes, while the log grew."""
    if in_child is None:
        in_child = threading.current_thread() is threading.main_thread()
    options = {"follow": follow, "topics": topics, "batch": batch, "catch_up": catch_up, "idle_stop": idle_stop}
    if not in_child:
        yield from read(bootstrap, start, **options)  # type: ignore[arg-type]
        return
    position = dict(start)
    while True:
        for records in _read_in_child(bootstrap, position, options, restart_when=waiting if follow else None):
            if records is None:  # the reader looks stuck: a new one, from where this one was
                log.warning("the projector's reader handed over nothing while records waited: started anew",
                            seconds=QUIET_LOOK, position={f"{t}:{p}": o for (t, p), o in position.items()})
                break
            for record in records:
                position[(record.topic, record.partition)] = record.offset + 1
            yield records
        else:
            return


def _read_in_child(bootstrap: str, start: dict[tuple[str, int], int], options: dict[str, Any],
                   restart_when: Callable[[], bool] | None) -> Iterator[list[Incoming] | None]:
    """One reader process's batches; None (then the end) when ``restart_when`` says records
    wait after QUIET_LOOK seconds without a record from it."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_read_into, args=(receiver, sender, os.getpid(), bootstrap, start, options),
                            daemon=True,
                            name="projector-reader")
    child.start()
    sender.close()
    last_record = last_look = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if restart_when is not None and now - max(last_record, last_look) >= QUIET_LOOK:
                last_look = now
                if _asked(restart_when):
                    yield None
                    return
            if not receiver.poll(IDLE):  # the projector's loop must breathe (signals) whatever the child does
                if not child.is_alive():
                    raise RuntimeError("the projector's reader process ended without a word")
                if not options["follow"]:
                    continue
                message = []
            else:
                try:
                    message = receiver.recv()
                except EOFError:
                    raise RuntimeError("the projector's reader process ended without a word") from None
                if message is None:
                    return
                if isinstance(message, BaseException):
                    raise message
            # Quiet counts while the projector waits for records, not while it applies or
            # writes them: the time spent away from here moves both marks forward.
            handed = time.monotonic()
            yield [Incoming(*fields) for fields in message]
            away = time.monotonic() - handed
            last_look += away
            last_record = handed + away if message else last_record + away
    finally:
        receiver.close()
        if child.is_alive():
            child.terminate()
        child.join()


def _asked(question: Callable[[], bool]) -> bool:
    """``question()``, False when it cannot be answered (the broker or the database away)."""
    try:
        return question()
    except Exception as exc:
        log.info("could not tell whether records wait for the projector", error=str(exc))
        return False


def _read_into(receiver: Connection, sender: Connection, parent: int, bootstrap: str,
               start: dict[tuple[str, int], int], options: dict[str, Any]) -> None:
    """The reader process: ``read``'s batches as tuples (cheaper to pickle than objects),
    then None; an error is handed over to be raised in the projector. It dies with the
    projector (a SIGKILL too): it holds copies of the projector's descriptors, its /metrics
    port among them, which a restarted projector must be able to bind."""
    receiver.close()  # the projector's end: once the projector is gone, a send fails
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the projector's handlers: its terminate() ends it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the projector stops it
    _die_with_parent(parent)
    try:
        for records in read(bootstrap, start, **options):
            sender.send([(r.topic, r.partition, r.offset, r.value, r.key) for r in records])
        sender.send(None)
    except BrokenPipeError:
        pass  # the projector stopped reading: it is stopping
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))  # raised in the projector: it must come back whole
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(OSError):  # the projector is gone already
            sender.send(exc)
    finally:
        sender.close()


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``).
    ``parent`` is the projector's pid, taken before the fork: in a container the projector
    is pid 1 itself, so "my parent is 1" cannot mean "my parent died"."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)


def read(bootstrap: str, start: dict[tuple[str, int], int], *, follow: bool, topics: tuple[str, ...] = (EVENTS,),
         batch: int = POLL, catch_up: int = CATCH_UP, idle_stop: float | None = None) -> Iterator[list[Incoming]]:
    """Batches of records from ``start[(topic, partition)]`` (next offset to read) on; with
    ``follow=False`` stops at the end offsets captured at start (fetch high watermarks).
    Offsets need not be contiguous (a transaction's commit marker takes one).

    A batch's size follows the backlog: live, a poll hands over what arrived (often one
    record, written at once: freshness); when a poll comes back full there is a backlog, and
    further polls that do not wait are added to the batch up to ``catch_up`` records, so a
    catch-up or a rebuild pays each table's round trip once per many records."""
    # A short fetch wait: the embedded broker answers a waiting fetch only after about half
    # of it, even when records arrive meanwhile (measured in dev mode: answer -> SQL p50
    # 0.234 s with kafka-python's 500 ms, 0.038 s with 100 ms); on Kafka it costs idle fetches.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             max_poll_records=batch, fetch_max_wait_ms=100, isolation_level="read_committed",
                             **client_options())
    try:
        tps = [tp for topic in topics for tp in partitions_of(consumer, topic)]
        consumer.assign(tps)
        ends = true_end_offsets(consumer, tps) if not follow else {}
        for tp in tps:
            consumer.seek(tp, start.get((tp.topic, tp.partition), 0))
        remaining = {tp for tp in tps if follow or start.get((tp.topic, tp.partition), 0) < ends[tp]}
        last_data = time.monotonic()
        while remaining:
            out: list[Incoming] = []
            wait, polled_full = 200, True
            while polled_full and len(out) < catch_up and remaining:
                polled = consumer.poll(timeout_ms=wait, max_records=batch)
                wait, polled_full = 0, sum(len(records) for records in polled.values()) >= batch
                for tp, records in polled.items():
                    for r in records:
                        if follow or r.offset < ends[tp]:
                            out.append(Incoming(tp.topic, tp.partition, r.offset, r.value, r.key))
                if not follow:  # also the partitions whose last fetch held only a transaction's marker
                    remaining -= {tp for tp in remaining if consumer.position(tp) >= ends[tp]}
            if out:
                last_data = time.monotonic()
                yield out
            elif follow:
                yield []  # let the caller breathe (signals, metrics)
                if idle_stop is not None and time.monotonic() - last_data > idle_stop:
                    return
    finally:
        consumer.close()


def run_projector(engine: Engine, bootstrap: str, policy: Policy, *, follow: bool = True,
                  should_stop: Any = lambda: False, idle_stop: float | None = None,
                  heads: HeadSigner | None = None) -> int:
    """Project the events topic into SQL from the stored checkpoints; returns events applied.
    With ``heads`` (the operator's key), signs and publishes the archive's tree heads on its
    schedule, from the first batch on (at most every HEAD_CHECK seconds), and once at the end.
    The schedule runs in a thread of its own: signing (under the archive's lock) and
    publishing (a producer's flush) took the projector's loop a moment every few seconds,
    during which a record that arrived waited (freshness, #31)."""
    projection = Projection(policy)
    start = {(topic, p): o + 1 for topic in (EVENTS, DEAD_LETTERS) for p, o in checkpoints(engine, topic).items()}
    log.info("projector starting", resume_from={f"{t}:{p}": o for (t, p), o in start.items()})
    applied = 0
    done, signer = threading.Event(), None
    # A batch is written by this thread of its own while the loop receives and decodes the
    # next one (no database needed): the decoding's Python overlaps the server's part of
    # the writes (#31). One batch at a time is written, in log order; each is still its own
    # transaction with its checkpoint.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-writer")
    writing: Future[int] | None = None
    try:
        for batch in consume(bootstrap, start, follow=follow, topics=(EVENTS, DEAD_LETTERS), idle_stop=idle_stop,
                             waiting=lambda: any(consumer_lag(engine, bootstrap).values())):
            events = projection.decode(batch) if batch else {}
            if writing is not None:
                written, writing = writing, None  # its failure is raised once, here
                applied += written.result()
            if batch:
                writing = writer.submit(apply_isolating, engine, projection, batch, events)
            if heads is not None and signer is None:
                signer = threading.Thread(target=_sign_heads, args=(heads, engine, done), name="head-signer",
                                          daemon=True)
                signer.start()
            if should_stop():
                break
    finally:
        try:
            if writing is not None:  # the last batch's transaction ends before the projector does
                applied += writing.result()
        finally:
            writer.shutdown(wait=True)
            done.set()
            if signer is not None:
                signer.join()
    if heads is not None:
        _tick(heads, engine)
        heads.close()
    return applied


def _sign_heads(heads: HeadSigner, engine: Engine, done: threading.Event) -> None:
    """The head schedule, every HEAD_CHECK seconds until ``done``."""
    while True:
        _tick(heads, engine)
        if done.wait(HEAD_CHECK):
            return


def _tick(heads: HeadSigner, engine: Engine) -> None:
    """Sign/publish a head; a broker or database hiccup here must not stop the projection
    (the next tick retries: unpublished heads stay marked so)."""
    try:
        heads.tick(engine)
    except Exception:
        log.exception("tree head signing or publication failed; retried at the next tick")


def apply_isolating(engine: Engine, projection: Projection, batch: list[Incoming],
                    events: dict[str, tuple[Incoming, Event]] | None = None) -> int:
    """Apply a batch in one transaction; if the database refuses it (a value it cannot
    store), apply its records one by one and set aside the one it refuses, recorded in
    ``dead_letters`` and past the checkpoint, instead of failing on it at every restart
    while nothing after it is projected. The audit then reports that event as missing
    from the archive. A database that is down is not a bad record: that error propagates."""
    try:
        with engine.begin() as conn:
            return projection.apply_batch(conn, batch, events)
    except DBAPIError as exc:
        if not refuses_value(exc):
            raise
        log.error("batch refused by the database, applying its records one by one", error=str(exc.orig),
                  records=len(batch))
    applied = 0
    for record in batch:
        try:
            with engine.begin() as conn:
                applied += projection.apply_batch(conn, [record])
        except DBAPIError as exc:
            if not refuses_value(exc):
                raise
            with engine.begin() as conn:
                projection.set_aside(conn, record, f"projection failed: {exc.orig}")
    return applied


def refuses_value(exc: DBAPIError) -> bool:
    """The database refused what it was given (data exception, constraint, a limit), as
    opposed to being unreachable or down."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    state = getattr(exc.orig, "sqlstate", None) or ""
    return state[:2] in ("22", "23", "54")
