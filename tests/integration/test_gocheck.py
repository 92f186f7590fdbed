"""Our checkpoints and proofs verified by an independent implementation (#26 item 3): the
Go program ``tests/gocheck`` (``golang.org/x/mod/sumdb/note`` and ``sumdb/tlog``), built
here, reads heads signed over a real archive in PostgreSQL, every inclusion proof and the
consistency proofs between heads, and refuses tampered ones."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine

from projections import merkle, tree
from projections.checkpoint import ED25519, VerifierKey
from projections.heads import add_cosignature, get_head, log_vkey, sign_head
from projections.migrate import create_schema
from projections.witness import Witness, request_body
from sla.events import encode_event
from slaledger.settings import load_policy
from tests.conftest import system_tool
from tests.integration.test_audit import dispute_log

pytestmark = pytest.mark.integration
GOCHECK = Path(__file__).resolve().parents[1] / "gocheck"
ORIGIN = "suivi.gip.example/slaledger"


@pytest.fixture(scope="module")
def gocheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = system_tool("go", package="golang-go (or the toolchain at /usr/local/go/bin)")
    out = tmp_path_factory.mktemp("gocheck") / "gocheck"
    subprocess.run([go, "build", "-mod=readonly", "-o", str(out), "."], cwd=GOCHECK, check=True)
    return out


def run(binary: Path, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary)], input=json.dumps(doc), capture_output=True, text=True, timeout=60)


def test_go_verifies_our_checkpoints_inclusion_and_consistency_proofs(gocheck: Path, database: str,
                                                                     tmp_path: Path) -> None:
    engine = create_engine(database)
    create_schema(engine)
    key = Ed25519PrivateKey.generate()
    envelopes = [encode_event(e) for e in dispute_log()]
    heads = []
    for part in (envelopes[:1], envelopes[1:4], envelopes[4:]):  # sizes 1 (a lone leaf), 4 (complete), n
        with engine.begin() as conn:
            tree.append(conn, part)
        heads.append(sign_head(engine, key, load_policy(), origin=ORIGIN))
    witness = Witness(tmp_path / "witness.sqlite", "witness.example/w1", Ed25519PrivateKey.generate(),
                      [VerifierKey(ORIGIN, ED25519, key.public_key())])
    cosignature = witness.add_checkpoint(request_body(0, [], heads[2].note()))
    add_cosignature(engine, heads[2].head_id or 0, cosignature.body)
    heads[2] = get_head(engine, heads[2].head_id or 0)  # type: ignore[assignment]
    assert heads[2].note().count("\n\u2014 ") == 2  # the operator's line and the witness's: Go ignores the latter
    sizes = [h.tree_size for h in heads]
    assert sizes[0] == 1 and sizes[1] == 4 and sizes[2] > 4 and sizes[2] & (sizes[2] - 1)
    with engine.connect() as conn:
        inclusion = [{"checkpoint": n, "leaf_index": i, "envelope_base64": base64.b64encode(envelopes[i]).decode(),
                      "inclusion_path": [p.hex() for p in tree.compute(
                          conn, lambda get, i=i, size=head.tree_size: merkle.inclusion_path(i, size, get))]}
                     for n, head in enumerate(heads) for i in range(head.tree_size)]
        consistency = [{"old": a, "new": b, "proof": [p.hex() for p in tree.consistency(
            conn, heads[a].tree_size, heads[b].tree_size)]} for a in range(3) for b in range(a, 3)]
    good = {"vkey": log_vkey(ORIGIN, key.public_key()), "checkpoints": [h.note() for h in heads],
            "inclusion": inclusion, "consistency": consistency}
    done = run(gocheck, good)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"OK: 3 checkpoint(s), {len(inclusion)} inclusion proof(s), 6 consistency proof(s)"

    def refused(doc: dict[str, Any], message: str) -> None:
        answer = run(gocheck, doc)
        assert answer.returncode == 1 and message in answer.stderr, answer.stderr

    other = copy.deepcopy(good)
    other["vkey"] = log_vkey(ORIGIN, Ed25519PrivateKey.generate().public_key())
    refused(other, "checkpoint 0: note has no verifiable signatures")  # another key of the same name
    resized = copy.deepcopy(good)
    resized["checkpoints"][2] = resized["checkpoints"][2].replace(f"\n{sizes[2]}\n", f"\n{sizes[2] + 1}\n", 1)
    refused(resized, "checkpoint 2: invalid signature")
    altered = copy.deepcopy(good)
    envelope = base64.b64decode(altered["inclusion"][-1]["envelope_base64"]).replace(b"alice", b"alicf")
    altered["inclusion"][-1]["envelope_base64"] = base64.b64encode(envelope).decode()
    refused(altered, f"(leaf {sizes[2] - 1} in a tree of {sizes[2]})")
    shifted = copy.deepcopy(good)
    shifted["inclusion"][1]["leaf_index"] = 2  # a proof for another leaf
    refused(shifted, "inclusion 1")
    bad_proof = copy.deepcopy(good)
    bad_proof["consistency"][-2]["proof"][0] = "00" * 32  # 1 → 4 … 4 → n: the second-to-last is 4 → n
    refused(bad_proof, "consistency 4")

    # a fork: the same first leaves, then others, signed by the same key: no proof links them
    fork = create_engine(f"sqlite:///{tmp_path / 'fork.sqlite'}")
    create_schema(fork)
    with fork.begin() as conn:
        tree.append(conn, [*envelopes[:4], *(b"forged " + e for e in envelopes[4:])])
    forked = sign_head(fork, key, load_policy(), origin=ORIGIN)
    assert forked.tree_size == sizes[2] and forked.root_hash != heads[2].root_hash
    with fork.connect() as conn:
        from_first = [p.hex() for p in tree.consistency(conn, 4, forked.tree_size)]
    split = {**good, "checkpoints": [*good["checkpoints"], forked.note()], "inclusion": [],
             "consistency": [{"old": 1, "new": 3, "proof": from_first}, {"old": 2, "new": 3, "proof": []}]}
    answer = run(gocheck, split)
    assert answer.returncode == 1 and "consistency 1" in answer.stderr  # 4 → fork holds; n → fork of n does not
    malformed = run(gocheck, {"vkey": "x", "checkpoints": []})
    assert malformed.returncode == 2 and malformed.stderr.startswith("gocheck: verifier key")
