#!/usr/bin/env python3
"""Check a slaledger dispute file (JSON) offline with the operator's public key.

    pip install cryptography && python3 docs/verify_dispute_file.py dossier.json gip.pub [--earlier old.json]

Runs `projections/dispute_check.py`, the very code of `slaledger audit check-file`: the head's
Ed25519 signature, every event's inclusion proof in the signed archive, each ticket's whole
history against the signed map of histories (nothing missing, reordered or shown twice), the
header derived from the proven events, and every clock and verdict re-folded by `sla/` with the
policy text the file quotes (its SHA-256 is signed). Exit 0: verified; 1: names each problem;
2: an unreadable file or key (one line).

Needs Python 3.11+, `cryptography`, and slaledger's source folders `sla/` and `projections/`
next to this `docs/` folder (a checkout or the source archive): nothing else is imported, no
database, no broker.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from projections.dispute_check import main

if __name__ == "__main__":
    sys.exit(main())
