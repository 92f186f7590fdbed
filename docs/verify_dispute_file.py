#!/usr/bin/env python3
"""Check a slaledger dispute file (JSON) with the operator's public key, without slaledger.

    pip install cryptography && python3 verify_dispute_file.py dossier.json gip.pub

Exit 0: the tree head's Ed25519 signature is valid and every event of the file, byte for
byte, is in the archive that head signed (RFC 6962 Merkle inclusion proofs), under the
ticket it is shown under. Exit 1: names what fails. Not checked: that no event was left
out of the file, and the verdicts (recomputed from the events by `slaledger audit replay`).
Needs only Python 3 and `cryptography`.
"""
import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives.serialization import load_pem_public_key


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def included(index, size, leaf, path, root):  # RFC 9162, 2.1.3.2
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def signed_head(head, key):
    """(tree size, root, signature valid) of a head: a C2SP checkpoint (signed note: origin,
    size, base64 root, extension lines `field value`, blank line, `— origin
    base64(key hash || Ed25519 signature)`), or the former JSON form (sorted keys, signed as is)."""
    raw = key.public_bytes_raw()
    if head.get("schema") == "slaledger.checkpoint/1":
        text, _, signatures = head["checkpoint"].rpartition("\n\n")
        text += "\n"
        origin, size, root = text.split("\n")[:3]
        fields = dict(line.split(" ", 1) for line in text.split("\n")[3:-1])
        key_hash = hashlib.sha256(origin.encode() + b"\n\x01" + raw).digest()[:4]
        valid = False
        for line in signatures.splitlines():
            name, _, encoded = line.removeprefix("\u2014 ").partition(" ")
            sig = base64.b64decode(encoded)
            if name == origin and sig[:4] == key_hash:
                try:
                    key.verify(sig[4:], text.encode())
                    valid = fields.get("key_id") == hashlib.sha256(raw).hexdigest()
                except Exception:
                    valid = False
        return int(size), base64.b64decode(root), valid
    head = dict(head)
    signature = base64.b64decode(head.pop("signature"))
    head.pop("head_id", None)
    signed = json.dumps(head, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    try:
        if head["key_id"] != hashlib.sha256(raw).hexdigest():
            raise ValueError("another key")
        key.verify(signature, signed)
        valid = True
    except Exception:
        valid = False
    return int(head["tree_size"]), bytes.fromhex(head["root_hash"]), valid


def main(file, key_file):
    with open(file, encoding="utf-8") as f:
        doc = json.load(f)
    with open(key_file, "rb") as f:
        key = load_pem_public_key(f.read())
    failures = []
    size, root, valid = signed_head(doc["evidence"]["head"], key)
    if not valid:
        failures.append("tree head: signature invalid (forged, altered, or another key)")
    for ticket in doc["tickets"]:
        for e in ticket["timeline"]:
            try:
                envelope = base64.b64decode(e["envelope_base64"], validate=True)
                shown = json.loads(envelope)
                if e["inclusion_path"] is None:
                    failures.append(f"event {e['event_id']}: not covered by the signed head (recorded after it)")
                    continue
                if any(shown[k] != e[k] for k in ("event_id", "type", "occurred_at", "recorded_at", "actor")) \
                        or shown["ticket_id"] != ticket["ticket_id"] or bool(e.get("answer")) != (
                        shown["type"] == "customer_informed" and bool(shown["payload"].get("answer"))):
                    failures.append(f"event {e['event_id']}: the file's fields differ from its archived bytes")
                leaf = hashlib.sha256(b"\x00" + envelope).digest()
                if not included(int(e["leaf_index"]), size, leaf, [bytes.fromhex(p) for p in e["inclusion_path"]],
                                root):
                    failures.append(f"event {e['event_id']} (leaf {e['leaf_index']}): inclusion proof fails")
            except Exception as exc:  # a malformed entry names its event, never a traceback
                failures.append(f"event {e.get('event_id')}: unreadable proof ({type(exc).__name__})")
    for line in failures:
        print("FAILED:", line)
    print("OK" if not failures else f"{len(failures)} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
