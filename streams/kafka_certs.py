"""A private certificate authority and the brokers' certificate, for Apache Kafka's TLS.

The secured clusters of ``slaledger.brokers.kafka_cluster`` (tests, benches) speak TLS like production
does; their certificates are made here at first start, and ``slaledger kafka certs`` makes
those of the Compose deployment, with the ``cryptography`` package instead of committed files
or ``keytool``: Kafka reads PEM key stores directly. The CA's own key is never written: a
new broker certificate comes with a new CA (run the command again, restart everything).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = ("localhost", "127.0.0.1")


def write_loopback_certificates(directory: Path, days: int = 30) -> tuple[Path, Path]:
    """``write_certificates`` for 127.0.0.1 and localhost, once (kept across restarts)."""
    ca_path, broker_path = directory / "ca.pem", directory / "broker.pem"
    if ca_path.exists() and broker_path.exists():
        return ca_path, broker_path
    return write_certificates(directory, LOOPBACK, days)


def write_certificates(directory: Path, hosts: tuple[str, ...] | list[str], days: int) -> tuple[Path, Path]:
    """Write ``ca.pem`` and ``broker.pem`` (the brokers' PKCS#8 key then their certificate,
    valid for each of ``hosts``, names or IP addresses, signed by the CA); returns their paths."""
    ca_path, broker_path = directory / "ca.pem", directory / "broker.pem"
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slaledger test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([_name(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    broker_path.touch(mode=0o600)
    broker_path.write_bytes(key_pem + cert.public_bytes(pem))
    ca_path.write_bytes(ca.public_bytes(pem))
    return ca_path, broker_path


def _name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
