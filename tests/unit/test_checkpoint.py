"""Signed heads as C2SP checkpoints (#26): the note's exact text and signature line, the
verifier key, extension lines for every other signed field, heads of the former JSON form
still verified; the witness's add-checkpoint rules and its cosignature; the chain of monthly
statements checked offline."""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine

from projections import checkpoint, merkle, tree
from projections.checkpoint import VerifierKey, raw_public
from projections.heads import HeadError, SignedHead, add_cosignature, get_head, log_vkey, sign_head
from projections.migrate import create_schema
from projections.statements import check_statements
from projections.witness import Witness, request_body
from slaledger.settings import Settings, load_policy

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ORIGIN = "gip.example/slaledger"


def _engine(tmp_path: Path, leaves: int) -> Any:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_schema(engine)
    grow(engine, 0, leaves)
    return engine


def grow(engine: Any, start: int, stop: int, tag: str = "") -> None:
    with engine.begin() as conn:
        tree.append(conn, [f"event {i}{tag}".encode() for i in range(start, stop)])


def test_a_head_is_a_c2sp_checkpoint_whose_signature_line_follows_signed_note(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    engine = _engine(tmp_path, 3)
    head = sign_head(engine, key, load_policy(), T0, ORIGIN)
    with engine.connect() as conn:
        root = tree.root(conn, 3)
    body, signature = head.note().split("\n\n")
    lines = body.split("\n")
    assert lines[:3] == [ORIGIN, "3", base64.b64encode(root).decode()]
    assert lines[3] == "timestamp 2026-03-02T09:00:00Z"
    assert lines[4].startswith('policy_versions [{"effective_from":')
    assert lines[5] == f"key_id {hashlib.sha256(raw_public(key.public_key())).hexdigest()}"
    name, encoded = signature.removeprefix("\u2014 ").rstrip("\n").split(" ")
    raw = base64.b64decode(encoded)
    assert name == ORIGIN and raw[:4] == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + raw_public(key.public_key())
                                                        ).digest()[:4]
    key.public_key().verify(raw[4:], (body + "\n").encode())  # Ed25519 over the note text
    vkey = log_vkey(ORIGIN, key.public_key())
    encoded_key = base64.b64encode(bytes([1]) + raw_public(key.public_key())).decode()
    assert vkey == f"{ORIGIN}+{raw[:4].hex()}+{encoded_key}"
    assert VerifierKey.parse(vkey).public.public_bytes_raw() == raw_public(key.public_key())
    # stored, published and read back: the note is the evidence
    stored = get_head(engine, head.head_id or 0)
    assert stored == head and stored is not None and stored.verify(key.public_key())
    again = SignedHead.from_dict(json.loads(json.dumps(head.to_dict())))
    assert again == head and again.verify(key.public_key()) and again.note() == head.note()
    assert not again.verify(Ed25519PrivateKey.generate().public_key())


def test_every_other_signed_field_is_an_extension_line_and_a_tampered_note_is_refused(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    head = sign_head(_engine(tmp_path, 2), key, load_policy(), T0, ORIGIN)
    assert list(head.extensions()) == [k for k in head.signed_fields() if k not in ("origin", "tree_size",
                                                                                      "root_hash")]
    text = checkpoint.checkpoint_text(ORIGIN, 1, bytes(32), {"ticket_map_root": "ab" * 32, "n": 3, "s": "12"})
    assert text.splitlines()[3:] == ["ticket_map_root " + "ab" * 32, "n 3", 's "12"']
    assert checkpoint.parse_checkpoint(text).extensions == {"ticket_map_root": "ab" * 32, "n": 3, "s": "12"}
    note = head.note()
    for tampered in (note.replace("\n2\n", "\n3\n", 1),  # another size
                     note.replace("timestamp 2026-03-02T09:00:00Z", "timestamp 2026-03-03T09:00:00Z")):
        assert not SignedHead.from_note(tampered).verify(key.public_key())
    for bad in ("", "x", note.replace("\n\n", "\n"), note + "junk\n", note.replace(ORIGIN, "a b", 1),
                note.replace("\n2\n", "\n02\n", 1), note.replace("timestamp ", "timestamp  ", 1),
                note.replace("key_id ", "extra 1\nkey_id ", 1), 7, None):
        with pytest.raises(HeadError):
            SignedHead.from_note(bad)
    with pytest.raises(HeadError):
        SignedHead.from_dict({**head.to_dict(), "head_id": 1e400})


def test_a_head_of_the_former_json_form_still_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    unsigned = SignedHead(3, "ab" * 32, T0, [], checkpoint_key_id(key), "", 4)
    legacy = SignedHead(**{**unsigned.__dict__,
                           "signature": base64.b64encode(key.sign(unsigned.signed_bytes())).decode()})
    published = json.loads(json.dumps(legacy.to_dict()))
    assert published["schema"] == "slaledger.tree-head/1" and "checkpoint" not in published
    again = SignedHead.from_dict(published)
    assert again.origin is None and again.verify(key.public_key())
    assert again.witnessed_by([]) == []
    with pytest.raises(HeadError, match="former JSON form"):
        again.note()


def checkpoint_key_id(key: Ed25519PrivateKey) -> str:
    return hashlib.sha256(raw_public(key.public_key())).hexdigest()


def test_the_origin_setting_and_its_default() -> None:
    assert Settings.from_env({}).origin == "localhost/slaledger"
    assert Settings.from_env({"SLALEDGER_PUBLIC_URL": "https://suivi.gip.example/sla/"}).origin == \
        "suivi.gip.example/sla/slaledger"
    assert Settings.from_env({"SLALEDGER_LOG_ORIGIN": "gip.example/log"}).origin == "gip.example/log"


def _witness(tmp_path: Path, log_key: Ed25519PrivateKey) -> tuple[Witness, VerifierKey]:
    wkey = Ed25519PrivateKey.generate()
    witness = Witness(tmp_path / "witness.sqlite", "witness.example/w1", wkey,
                      [VerifierKey(ORIGIN, checkpoint.ED25519, log_key.public_key())], clock=lambda: 1_700_000_000)
    return witness, VerifierKey.parse(witness.vkey())


def test_the_witness_cosigns_only_consistent_growth(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    engine = _engine(tmp_path, 5)
    witness, wkey = _witness(tmp_path, key)
    first = sign_head(engine, key, load_policy(), T0, ORIGIN)
    answer = witness.add_checkpoint(request_body(0, [], first.note()))
    assert answer.status == 200
    line = checkpoint.parse_signature_line(answer.body.rstrip("\n"))
    assert checkpoint.verify_cosignature(first.checkpoint_text(), line, wkey) == 1_700_000_000
    assert line.key_hash == hashlib.sha256(b"witness.example/w1\n\x04" + raw_public(wkey.public)).digest()[:4]
    add_cosignature(engine, first.head_id or 0, answer.body)
    stored = get_head(engine, first.head_id or 0)
    assert stored is not None and stored.witnessed_by([wkey]) == [wkey]
    assert stored.witnessed_by([wkey, VerifierKey.parse(witness.vkey())]) == [wkey]  # the same key twice: once
    assert SignedHead.from_dict(stored.to_dict()).witnessed_by([wkey]) == [wkey]

    grow(engine, 5, 9)
    second = sign_head(engine, key, load_policy(), T0, ORIGIN)
    with engine.connect() as conn:
        proof = tree.consistency(conn, 5, 9)
    assert witness.add_checkpoint(request_body(0, [], second.note())).status == 409  # it holds 5
    conflict = witness.add_checkpoint(request_body(0, [], second.note()))
    assert (conflict.body, conflict.content_type) == ("5\n", "text/x.tlog.size")
    assert witness.add_checkpoint(request_body(5, proof[:-1], second.note())).status == 422
    assert witness.add_checkpoint(request_body(5, proof, second.note())).status == 200

    (tmp_path / "fork").mkdir()
    fork = _engine(tmp_path / "fork", 0)
    grow(fork, 0, 8)
    grow(fork, 8, 9, tag=" forked")
    forked = sign_head(fork, key, load_policy(), T0, ORIGIN)  # same size, another root: a split view
    assert forked.tree_size == 9 and forked.root_hash != second.root_hash
    assert witness.add_checkpoint(request_body(9, [], forked.note())).status == 409
    stranger = sign_head(fork, Ed25519PrivateKey.generate(), load_policy(), T0, ORIGIN)
    assert witness.add_checkpoint(request_body(9, [], stranger.note())).status == 403
    other_log = sign_head(fork, key, load_policy(), T0, "other.example/log")
    assert witness.add_checkpoint(request_body(0, [], other_log.note())).status == 404
    for bad in (b"", b"old x\n\nabc", b"\xff", request_body(10, [], second.note()), b"old 9\nzz\n\n" +
                second.note().encode()):
        assert witness.add_checkpoint(bad).status == 400


def _statement(month: str, head: SignedHead, previous: SignedHead | None, proof: list[bytes]) -> dict[str, Any]:
    link = None if previous is None else {"month": "-", "head": previous.to_dict(),
                                          "consistency_proof": [p.hex() for p in proof]}
    return {"schema": "slaledger.monthly-statement/1", "member": {"id": "commune-de-blois"}, "month": month,
            "head": head.to_dict(), "previous": link}


def test_the_chain_of_statements_is_checked_offline(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    engine = _engine(tmp_path, 4)
    heads = [sign_head(engine, key, load_policy(), T0, ORIGIN)]
    for size in (7, 12):
        grow(engine, heads[-1].tree_size, size)
        heads.append(sign_head(engine, key, load_policy(), T0, ORIGIN))
    with engine.connect() as conn:
        proofs = [tree.consistency(conn, a.tree_size, b.tree_size) for a, b in itertools.pairwise(heads)]
    docs = [_statement("2026-01", heads[0], None, []), _statement("2026-02", heads[1], heads[0], proofs[0]),
            _statement("2026-03", heads[2], heads[1], proofs[1])]
    files = [(f"{d['month']}.json", d) for d in docs]
    assert check_statements(files, key.public_key()) == []
    assert check_statements(files[::2], key.public_key())[0].startswith("2026-03.json : le relevé précédent donné "
                                                                        "est celui de 2026-01")
    rewritten = copy.deepcopy(docs)
    rewritten[2]["previous"]["consistency_proof"][0] = "00" * 32
    assert "réécrit entre les deux relevés" in check_statements(
        [(f"{d['month']}.json", d) for d in rewritten], key.public_key())[0]
    other = Ed25519PrivateKey.generate()
    assert "ne se vérifie pas" in check_statements(files, other.public_key())[0]
    _, wkey = _witness(tmp_path, key)
    problems = check_statements(files, key.public_key(), [wkey], 1)
    assert len(problems) == 3 and "contresignée par 0 des témoins" in problems[0]
    for junk in (None, [], {"schema": "slaledger.monthly-statement/1", "month": "2026-13"},
                 {**docs[1], "head": {"schema": "slaledger.checkpoint/1", "checkpoint": 5}},
                 {**docs[1], "previous": {"head": docs[0]["head"], "consistency_proof": "x"}}):
        out = check_statements([("x.json", junk)], key.public_key())
        assert out and all("\n" not in line and line.startswith("x.json") for line in out)
    assert merkle.verify_consistency(4, 7, bytes.fromhex(heads[0].root_hash), bytes.fromhex(heads[1].root_hash),
                                     proofs[0])


def test_the_witness_commands_end_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from slaledger.cli import main

    key = tmp_path / "keys"
    assert main(["keys", "create", "--out", str(key), "--origin", ORIGIN]) == 0
    assert (key / "signing-key.vkey").read_text().startswith(f"{ORIGIN}+")
    capsys.readouterr()
    assert main(["witness", "vkey", "--key", str(key / "signing-key"), "--name", "w.example/1"]) == 0
    assert VerifierKey.parse(capsys.readouterr().out).alg == checkpoint.COSIGNATURE_V1
    for argv, says in ((["vkey", "--key", str(tmp_path / "absent"), "--name", "w"], "signing key file"),
                       (["vkey", "--key", str(key / "signing-key"), "--name", "a b"], "witness name"),
                       (["serve", "--key", str(key / "signing-key"), "--name", "w", "--log-key", "x+y+z",
                         "--state", str(tmp_path / "s.sqlite")], "verifier key"),
                       (["serve", "--key", str(key / "signing-key"), "--name", "w", "--log-key",
                         str(key / "signing-key.vkey"), "--state", str(tmp_path / "no" / "s.sqlite")],
                        "witness state")):
        assert main(["witness", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("slaledger: error: ") and says in err and err.count("\n") == 1, err


def test_a_dispute_file_leads_to_the_newest_cosigned_head_that_covers_its_events(tmp_path: Path) -> None:
    """#26 item 4: dispute files carry the cosigned checkpoint, once a witness cosigned one
    that covers the events shown; else the latest head."""
    from projections.heads import head_for_proofs

    key = Ed25519PrivateKey.generate()
    engine = _engine(tmp_path, 5)
    witness, _ = _witness(tmp_path, key)
    first = sign_head(engine, key, load_policy(), T0, ORIGIN)
    assert head_for_proofs(engine, 5) == first  # nothing cosigned yet: the latest
    add_cosignature(engine, first.head_id or 0, witness.add_checkpoint(request_body(0, [], first.note())).body)
    grow(engine, 5, 9)
    second = sign_head(engine, key, load_policy(), T0, ORIGIN)  # not cosigned (yet)
    chosen = head_for_proofs(engine, 5)
    assert chosen is not None and chosen.head_id == first.head_id and chosen.cosignatures
    later = head_for_proofs(engine, 9)  # events past the cosigned head: the latest covers them
    assert later is not None and later.head_id == second.head_id


def test_the_witness_refuses_a_checkpoint_of_a_size_it_cosigned_that_says_something_else(tmp_path: Path) -> None:
    """The same size and root with another map of histories (an event hidden from one
    ticket's history) is a split view of what members rely on; the same checkpoint signed
    again later (a quiet log's daily head: only its time differs) is cosigned."""
    key = Ed25519PrivateKey.generate()
    engine = _engine(tmp_path, 5)
    witness, _ = _witness(tmp_path, key)
    first = sign_head(engine, key, load_policy(), T0, ORIGIN)
    assert witness.add_checkpoint(request_body(0, [], first.note())).status == 200
    again = sign_head(engine, key, load_policy(), T0 + timedelta(days=1), ORIGIN)
    assert witness.add_checkpoint(request_body(5, [], again.note())).status == 200
    forged = dataclasses.replace(first, ticket_map_root="ab" * 32, timestamp=T0 + timedelta(days=2))
    text = forged.checkpoint_text()
    line = checkpoint.sign_note(text, ORIGIN, key)
    answer = witness.add_checkpoint(request_body(5, [], text + "\n" + line.line()))
    assert (answer.status, answer.body) == (409, "5\n")
