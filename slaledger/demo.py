"""``slaledger dev --demo``: a realistic synthetic stream so a newcomer sees things move.

It opens with four administrative requests taken by phone (no intake clock; one calendar
week to answer, whatever the hour or the day), dated so that the queue shows each state
within a minute of the start: breached (filed 8 days ago), at risk (5 days and 12 hours ago:
past 75 % of the week), paused (waiting for the member) and running (filed now). Then
members (communes, an agglomeration, a lycée), their products, both request classes,
portal and phone entries (phone calls typed in later: business time in the past), some
acknowledgements made late, incidents with restoration times, resolutions and closures.
Commands go through the commands topic like any other, as actor ``demo``.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from sla.ticket import Command, CommandType

log = structlog.get_logger(__name__)

MEMBERS = ["commune-de-chartres", "commune-de-vierzon", "agglo-montargoise", "lycee-pothier", "commune-de-blois"]
PRODUCTS = ["ent-netocentre", "parapheur", "messagerie", "gestion-financiere", "local-trust-mpe"]
SUBJECTS = {
    "assistance": ["Création d'un compte utilisateur", "Mot de passe oublié", "Circuit de signature à modifier",
                   "Demande de formation"],
    "incident": ["Parapheur inaccessible", "Messagerie en panne", "Erreur 500 sur l'ENT", "Lenteurs importantes"],
    "administrative": ["Question sur la convention", "Ajout d'un référent", "Attestation d'adhésion"],
    "go_live": ["Mise en production du parapheur", "Ouverture de l'ENT pour un nouveau lycée"],
}
STAGES = [CommandType.ACKNOWLEDGE, CommandType.INFORM, CommandType.RESOLVE, CommandType.CLOSE]


@dataclass
class DemoTicket:
    ticket_id: str
    kind: str
    filed_at: datetime
    stage: int = 0


class DemoFeeder:
    def __init__(self, send: Callable[[Command], Awaitable[None]], interval: float = 2.0,
                 seed: int | None = None) -> None:
        self.send = send  # to the commands topic, nobody waiting for the outcome
        self.interval = interval
        self.rng = random.Random(seed)
        self.open: list[DemoTicket] = []

    async def run(self) -> None:
        await asyncio.sleep(3)
        log.info("demo feeder started", interval=self.interval)
        try:
            await self.seed(datetime.now(UTC))
        except Exception:
            log.exception("demo seed failed")
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("demo step failed")
            await asyncio.sleep(self.interval * self.rng.uniform(0.5, 1.5))

    async def seed(self, now: datetime) -> None:
        """One ticket in each state a newcomer should recognise (see the module's docstring)."""
        for age, subject, paused in ((timedelta(days=8), "Attestation d'adhésion", False),
                                     (timedelta(days=5, hours=12), "Question sur la convention", False),
                                     (timedelta(days=1), "Ajout d'un référent", True),
                                     (timedelta(0), "Question sur la convention", False)):
            ticket_id = "DEMO-" + uuid.uuid4().hex[:8].upper()
            payload = {"kind": "administrative", "channel": "phone", "member": self.rng.choice(MEMBERS),
                       "product": "ent-netocentre", "subject": subject}
            await self.send(Command(CommandType.FILE, ticket_id, "demo", payload, now - age))
            if paused:
                await self.send(Command(CommandType.ACKNOWLEDGE, ticket_id, "demo", {}, now - age))
                await self.send(Command(CommandType.WAIT_FOR_CUSTOMER, ticket_id, "demo",
                                        {"reason": "Merci de nous indiquer le nom du nouveau référent."}))

    async def step(self) -> None:
        now = datetime.now(UTC)
        if not self.open or self.rng.random() < 0.55:
            await self._file(now)
        else:
            await self._progress(self.rng.choice(self.open), now)

    async def _file(self, now: datetime) -> None:
        kind = self.rng.choices(list(SUBJECTS), weights=[5, 3, 1, 1])[0]
        channel = self.rng.choice(["portal", "portal", "phone", "email"])
        # a phone call taken earlier and typed in now; portal filings sometimes from the night before
        received = now - timedelta(minutes=self.rng.choice([0, 0, 5, 30, 240, 600]))
        payload: dict[str, Any] = {
            "kind": kind, "channel": channel, "member": self.rng.choice(MEMBERS),
            "product": self.rng.choices(PRODUCTS, weights=[4, 3, 3, 2, 1])[0],
            "subject": self.rng.choice(SUBJECTS[kind]),
        }
        if kind == "go_live":
            payload["elements_complete"] = self.rng.random() < 0.5
        ticket_id = "DEMO-" + uuid.uuid4().hex[:8].upper()
        await self.send(Command(CommandType.FILE, ticket_id, "demo", payload, received))
        self.open.append(DemoTicket(ticket_id, kind, received))

    async def _progress(self, ticket: DemoTicket, now: datetime) -> None:
        command_type = STAGES[ticket.stage]
        payload: dict[str, Any] = {}
        occurred: datetime | None = None
        if command_type is CommandType.ACKNOWLEDGE:
            # most are acknowledged promptly; some acknowledgements were made earlier, typed in late
            occurred = max(ticket.filed_at, now - timedelta(minutes=self.rng.choice([0, 0, 10, 90])))
        elif command_type is CommandType.INFORM:
            payload = {"message": "Analyse en cours, nous revenons vers vous."}
            if ticket.kind == "incident":
                payload["restoration_eta"] = (now + timedelta(hours=self.rng.choice([2, 4, 24]))).isoformat()
        elif command_type is CommandType.RESOLVE:
            payload = {"resolution": "Traité."}
        await self.send(Command(command_type, ticket.ticket_id, "demo", payload, occurred))
        ticket.stage += 1
        if ticket.stage >= len(STAGES):
            self.open.remove(ticket)
