"""Signed tree heads (``projections.heads``): keys, canonical signed bytes, the projector's
schedule (on an interval when the tree grew, at least daily), the dev mode's key pair."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine

from projections import merkle, tree
from projections.dispute_check import head_problems, read_head
from projections.head_signer import HeadSigner
from projections.heads import (
    HeadError,
    SignedHead,
    create_key_pair,
    head_at,
    key_id,
    list_heads,
    load_private_key,
    load_public_key,
    policy_versions,
    read_key_file,
)
from projections.migrate import create_schema
from sla.policy import parse_policy
from slaledger.evidence_cli import dev_signing_key
from slaledger.settings import Settings, load_policy

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_key_files_and_formats(tmp_path: Path) -> None:
    private, public = create_key_pair(tmp_path)
    assert private.stat().st_mode & 0o777 == 0o600 and public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY")
    with pytest.raises(HeadError, match="not overwritten"):
        create_key_pair(tmp_path)
    key = read_key_file(private)
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    for form in (seed, seed.hex().encode(), base64.b64encode(seed) + b"\n"):
        assert key_id(load_private_key(form).public_key()) == key_id(key.public_key())
    raw_public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(load_public_key(raw_public.hex().encode())) == key_id(read_key_file(public, public=True))
    for bad in (b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"):
        with pytest.raises(HeadError):
            load_private_key(bad)
    with pytest.raises(HeadError, match="signing key file"):
        read_key_file(tmp_path / "absent")


def test_signed_bytes_are_the_documented_canonical_json() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    head = SignedHead(3, "ab" * 32, T0, [{"id": "v1", "effective_from": "2026-01-01T00:00:00Z"}],
                      key_id(key.public_key()), "")
    expected = ('{"key_id":"' + head.key_id + '","policy_versions":[{"effective_from":"2026-01-01T00:00:00Z",'
                '"id":"v1"}],"root_hash":"' + "ab" * 32 + '","schema":"slaledger.tree-head/1",'
                '"timestamp":"2026-03-02T09:00:00Z","tree_size":3}').encode()
    assert head.signed_bytes() == expected
    signed = SignedHead(**{**head.__dict__, "signature": base64.b64encode(key.sign(expected)).decode()})
    assert signed.verify(key.public_key())
    again = SignedHead.from_dict(json.loads(json.dumps(signed.to_dict())))
    assert again == signed and again.verify(key.public_key())
    other = Ed25519PrivateKey.generate().public_key()
    assert not signed.verify(other)  # another key (and another key id)
    assert not SignedHead(**{**signed.__dict__, "tree_size": 4}).verify(key.public_key())
    # the offline verifier rebuilds the very bytes the head signs (projections.dispute_check)
    assert read_head(signed.to_dict()).signed == expected
    for bad in (None, {}, {**signed.to_dict(), "schema": "x"}, {**signed.to_dict(), "root_hash": "zz"},
                {**signed.to_dict(), "timestamp": "yesterday"}):
        with pytest.raises(HeadError):
            SignedHead.from_dict(bad)


def test_a_head_signs_the_ticket_map_root_and_each_policy_texts_sha256() -> None:
    """#26: the two fields the dispute file's completeness and re-fold rest on; the offline
    verifier reads them and rebuilds the same signed bytes."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    versions = policy_versions(load_policy())
    assert all(len(v["sha256"]) == 64 for v in versions)
    assert versions[0]["sha256"] == hashlib.sha256(load_policy().versions[0].text.encode()).hexdigest()
    for version in load_policy().versions:  # each version's text is a policy by itself: that version
        assert version.text.startswith("[[versions]]") and parse_policy(version.text).versions == (version,)
    head = SignedHead(3, "ab" * 32, T0, versions, key_id(key.public_key()), "", ticket_map_root="cd" * 32)
    assert b'"ticket_map_root":"' + b"cd" * 32 + b'"' in head.signed_bytes()
    signed = SignedHead(**{**head.__dict__, "signature": base64.b64encode(key.sign(head.signed_bytes())).decode()})
    again = SignedHead.from_dict(json.loads(json.dumps(signed.to_dict())))
    assert again == signed and again.verify(key.public_key())
    read = read_head(signed.to_dict())
    assert read.signed == signed.signed_bytes() and read.ticket_map_root == bytes.fromhex("cd" * 32)
    assert head_problems(read, key.public_key()) == []
    with pytest.raises(HeadError):
        SignedHead.from_dict({**signed.to_dict(), "ticket_map_root": "zz"})


def test_the_projector_signs_on_its_interval_when_the_tree_grew_and_at_least_daily(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_schema(engine)
    key = Ed25519PrivateKey.generate()
    signer = HeadSigner(key, load_policy(), interval=timedelta(hours=1))  # no broker: not published

    def grow(*envelopes: bytes) -> None:
        with engine.begin() as conn:
            tree.append(conn, list(envelopes))

    grow(b"a", b"b", b"c")
    first = signer.tick(engine, T0)
    assert first is not None and first.tree_size == 3 and first.verify(key.public_key())
    assert first.root_hash == merkle.node_hash(merkle.node_hash(merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")),
                                               merkle.leaf_hash(b"c")).hex()
    grow(b"d")
    assert signer.tick(engine, T0 + timedelta(minutes=30)) is None  # grew, but the interval has not passed
    second = signer.tick(engine, T0 + timedelta(hours=1))
    assert second is not None and second.tree_size == 4
    assert signer.tick(engine, T0 + timedelta(hours=5)) is None  # did not grow
    daily = signer.tick(engine, T0 + timedelta(days=1, hours=1))
    assert daily is not None and daily.tree_size == 4
    assert [h.head_id for h in list_heads(engine)] == [1, 2, 3]
    assert head_at(engine, T0 + timedelta(hours=3)) == second
    assert head_at(engine, T0 - timedelta(seconds=1)) is None


def test_dev_mode_creates_a_key_pair_once_unless_one_is_configured(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=str(tmp_path / "data"))
    flags = dev_signing_key(settings)
    assert flags == {"signing_key_file": str(tmp_path / "data" / "signing-key")}
    assert (tmp_path / "data" / "signing-key.pub").exists()
    assert dev_signing_key(settings) == flags  # the same pair at the next start
    assert dev_signing_key(Settings.from_env({}, data_dir=str(tmp_path), signing_key_file="/k")) == {}
    public = Settings.from_env({"SLALEDGER_SIGNING_KEY": "00" * 32, "SLALEDGER_SIGNING_KEY_FILE": "/etc/k"}).public()
    assert public["signing_key"] == "***" and public["signing_key_file"] == "/etc/k"


def test_head_commands_on_a_sqlite_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from slaledger.cli import main

    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    monkeypatch.delenv("SLALEDGER_SIGNING_KEY_FILE", raising=False)
    monkeypatch.delenv("SLALEDGER_SIGNING_KEY", raising=False)
    assert main(["audit", "sign-head", "--database", database]) == 2
    assert capsys.readouterr().err.strip() == ("slaledger: error: no signing key: set SLALEDGER_SIGNING_KEY_FILE "
                                               "(see `slaledger keys create`), or give --data-dir of a `slaledger "
                                               "dev` that wrote one")
    engine = create_engine(database)
    create_schema(engine)
    with engine.begin() as conn:
        tree.append(conn, [b"a", b"b", b"c"])
    monkeypatch.setenv("SLALEDGER_SIGNING_KEY", "07" * 32)  # the raw seed, as hex
    assert main(["audit", "sign-head", "--database", database]) == 0
    with engine.begin() as conn:
        tree.append(conn, [b"d", b"e"])
    assert main(["audit", "sign-head", "--database", database]) == 0
    capsys.readouterr()
    assert main(["audit", "heads", "--database", database]) == 0
    heads = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(h["head_id"], h["tree_size"]) for h in heads] == [(1, 3), (2, 5)]
    assert main(["audit", "consistency", "--database", database, "--from", "1", "--to", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["consistent"] is True
    (tmp_path / "bad.json").write_text('{"schema": "slaledger.tree-head/1", "tree_size": 1}')
    assert main(["audit", "consistency", "--database", database, "--from", str(tmp_path / "bad.json"),
                 "--to", "2"]) == 2
    assert capsys.readouterr().err.startswith("slaledger: error: malformed tree head")
    assert main(["audit", "consistency", "--database", database, "--from", "7", "--to", "2"]) == 2
    assert "no signed head 7" in capsys.readouterr().err


def test_sign_head_finds_the_key_dev_wrote_in_its_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from projections.heads import create_key_pair
    from slaledger.cli import main

    monkeypatch.delenv("SLALEDGER_SIGNING_KEY_FILE", raising=False)
    monkeypatch.delenv("SLALEDGER_SIGNING_KEY", raising=False)
    create_key_pair(tmp_path)  # what `slaledger dev --data-dir tmp_path` writes
    engine = create_engine(f"sqlite:///{tmp_path / 'slaledger.db'}")
    create_schema(engine)
    with engine.begin() as conn:
        tree.append(conn, [b"a"])
    assert main(["audit", "sign-head", "--data-dir", str(tmp_path)]) == 0
    assert "\"tree_size\": 1," in capsys.readouterr().out


def test_a_file_downloaded_before_the_next_head_says_its_newest_events_are_not_yet_signed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """#32 item 1: events recorded after the latest signed head (a file downloaded within
    seconds of them) are « not yet signed » on page 1, in the proof section and in
    ``audit check-file`` (exit 3) — never an integrity failure; once a head covers them, every
    event is proven (exit 0). Without the fix page 1 said « chaque événement du dossier est
    prouvé » and check-file answered FAILED."""
    from html import unescape

    from projections.audit.dispute_file import dispute_file, stable_json
    from projections.audit.replay import Filters, replay
    from projections.audit.sources import archive_records
    from projections.heads import public_pem, sign_head
    from projections.projection import Incoming, Projection
    from projections.report import to_html, to_markdown
    from sla.events import EventType, encode_event, new_event
    from slaledger.cli import main

    policy = load_policy()
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    create_schema(engine)
    key = Ed25519PrivateKey.generate()
    (tmp_path / "gip.pub").write_bytes(public_pem(key.public_key()))
    filed = new_event(EventType.TICKET_FILED, "SL-1", occurred_at=T0, recorded_at=T0, actor="agent:dev",
                      payload={"kind": "incident", "channel": "portal", "member": "commune-de-blois",
                               "product": "parapheur", "subject": "Parapheur inaccessible"})
    acked = new_event(EventType.ACKNOWLEDGED, "SL-1", occurred_at=T0 + timedelta(minutes=5),
                      recorded_at=T0 + timedelta(minutes=5), actor="agent:dev", payload={})
    projection = Projection(policy)

    def archive(offset: int, event: Any) -> None:
        with engine.begin() as conn:
            projection.apply_batch(conn, [Incoming("slaledger.ticket-events", 0, offset, encode_event(event),
                                                   b"SL-1")])

    def check(doc: dict[str, Any]) -> tuple[int, str]:
        (tmp_path / "dossier.json").write_text(stable_json(doc))
        capsys.readouterr()
        code = main(["audit", "check-file", str(tmp_path / "dossier.json"), "--public-key", str(tmp_path / "gip.pub")])
        return code, capsys.readouterr().out

    archive(0, filed)
    sign_head(engine, key, policy, T0 + timedelta(minutes=1))
    archive(1, acked)  # recorded after the head: what a download within seconds of it meets
    result = replay(archive_records(engine, ticket="SL-1"), policy, Filters(ticket="SL-1"), source="archive",
                    engine=engine)
    assert result.ok, result.findings
    doc = dispute_file(result)
    markdown, html = to_markdown(doc), unescape(to_html(doc))
    for text in (markdown, html):
        assert "1 des 2 événements du dossier sont prouvés par la tête signée n° 1" in text
        assert "le plus récent n'est pas encore signé" in text and "chaque événement du dossier est prouvé" not in text
        assert "pas encore signé (enregistré après la tête signée du dossier)" in text  # the proof section agrees
        assert "non couvert" not in text
    code, out = check(doc)
    assert code == 3 and "FAILED" not in out, out
    assert "OK : signature valide, 1 événement(s) prouvé(s)" in out and "PAS ENCORE SIGNÉ : 1 événement(s)" in out
    # an event inside the head's tree shown without its proof is a fault, not « not yet signed »
    hidden = json.loads(stable_json(doc))
    hidden["tickets"][0]["timeline"][0]["inclusion_path"] = None
    code, out = check(hidden)
    assert code == 1 and "ÉCHEC : événement" in out and "sans preuve d'inclusion" in out, out

    sign_head(engine, key, policy, T0 + timedelta(minutes=6))  # the projector's next head
    doc = dispute_file(replay(archive_records(engine, ticket="SL-1"), policy, Filters(ticket="SL-1"),
                              source="archive", engine=engine))
    assert "chaque événement du dossier est prouvé" in to_markdown(doc)
    code, out = check(doc)
    assert code == 0 and out.startswith("OK : signature valide, 2 événement(s) prouvé(s)"), out
