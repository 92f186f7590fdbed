"""The offline check of a member's chain of monthly statements (``slaledger audit
check-statements``, issue #26).

Each statement carries the signed checkpoint of its month's end (``head``) and, under
``previous``, the previous month's statement checkpoint with the RFC 6962 consistency proof
from that tree to this one (``monthly.previous_link``). Given a member's statements oldest
first, the check proves, with nothing but the files and the operator's public key (and the
witnesses' keys if given), that each checkpoint is the operator's (and cosigned by enough
witnesses), and that each month's log extends the previous month's: a history rewritten
between two statements, or a statement of another log, breaks the chain.

Messages are French, one line each (a member reads them); nothing here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import merkle
from .checkpoint import VerifierKey
from .heads import HeadError, SignedHead, witness_problems
from .monthly import SCHEMA, Month, MonthError


def _head(name: str, raw: Any, public: Ed25519PublicKey, witnesses: Sequence[VerifierKey], required: int,
          problems: list[str]) -> SignedHead | None:
    try:
        head = SignedHead.from_dict(raw)
    except HeadError as exc:
        problems.append(f"{name} : tête d'arbre illisible ({exc})")
        return None
    if not head.verify(public):
        problems.append(f"{name} : la signature de la tête n° {head.head_id} ne se vérifie pas avec cette clé "
                        "publique (falsifiée, modifiée ou signée par une autre clé)")
    problems += [f"{name} : {p}" for p in witness_problems(head, witnesses, required)]
    return head


def _proof(raw: Any) -> list[bytes] | None:
    if not isinstance(raw, list) or len(raw) > 64 or not all(isinstance(p, str) and len(p) == 64 for p in raw):
        return None
    try:
        return [bytes.fromhex(p) for p in raw]
    except ValueError:
        return None


def check_statements(files: Sequence[tuple[str, Any]], public: Ed25519PublicKey,
                     witnesses: Sequence[VerifierKey] = (), required: int = 0) -> list[str]:
    """Every problem of a member's statements given oldest first (French, one line each)."""
    problems: list[str] = []
    before: tuple[str, Month, SignedHead | None] | None = None
    member = None
    for name, doc in files:
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            problems.append(f"{name} : pas un relevé mensuel slaledger (schéma {SCHEMA} attendu)")
            before = None
            continue
        try:
            month = Month.parse(str(doc.get("month")))
        except MonthError:
            problems.append(f"{name} : mois illisible ({str(doc.get('month'))[:20]!r})")
            before = None
            continue
        who = doc.get("member", {}).get("id") if isinstance(doc.get("member"), dict) else None
        if member is None:
            member = who
        elif who != member:
            problems.append(f"{name} : relevé de l'adhérent {who!r}, les précédents sont de {member!r}")
        if doc.get("head") is None:
            problems.append(f"{name} : aucune tête d'arbre signée (le journal n'est pas scellé pour ce mois)")
            before = (name, month, None)
            continue
        head = _head(name, doc["head"], public, witnesses, required, problems)
        link = doc.get("previous")
        previous = None
        if isinstance(link, dict):
            previous = _head(f"{name} (tête du mois précédent)", link.get("head"), public, (), 0, problems)
            proof = _proof(link.get("consistency_proof"))
            if proof is None:
                problems.append(f"{name} : preuve de cohérence illisible (une liste d'empreintes SHA-256 en "
                                "hexadécimal attendue)")
            elif head is not None and previous is not None and previous.tree_size and not (
                    previous.tree_size <= head.tree_size and merkle.verify_consistency(
                        previous.tree_size, head.tree_size, bytes.fromhex(previous.root_hash),
                        bytes.fromhex(head.root_hash), proof)):
                problems.append(f"{name} : le journal de fin {month} ({head.tree_size} événements) ne prolonge pas "
                                f"celui du mois précédent ({previous.tree_size} événements) : réécrit entre les deux "
                                "relevés")
        elif link is not None:
            problems.append(f"{name} : lien vers le relevé précédent illisible")
        if before is not None:
            earlier_name, earlier_month, earlier_head = before
            if earlier_month.next() != month:
                problems.append(f"{name} : le relevé précédent donné est celui de {earlier_month}, pas de "
                                f"{month.previous()} (relevé manquant ou dans le désordre)")
            elif earlier_head is not None and head is not None:
                if previous is None:
                    problems.append(f"{name} : aucun lien (tête et preuve de cohérence) vers le relevé de "
                                    f"{earlier_month}")
                elif previous != earlier_head:
                    problems.append(f"{name} : la tête du mois précédent qu'il cite n'est pas celle du relevé "
                                    f"{earlier_name} (deux journaux différents montrés)")
        before = (name, month, head)
    return problems
