"""``slaledger topics create`` and ``slaledger kafka certs``: the Kafka a deployment
provides, prepared (its topics and ACLs, its TLS certificates)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .cli_common import UsageError, command_settings, connection_options, reach_broker
from .logs import configure_logging


def add_parsers(commands: Any) -> None:
    topics = commands.add_parser("topics", help="Kafka topics")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True)
    create = topic_commands.add_parser("create", help="create every topic with its partitions and config")
    connection_options(create, broker=True, data_dir=None)
    create.add_argument("--partitions", type=int, help="partitions of the ticket topics (env SLALEDGER_PARTITIONS)")
    create.add_argument("--acls", action="store_true",
                        help="also make each principal's ACLs exactly those of streams/kafka_acls.py (as the "
                             "brokers' super user, on a cluster with an authorizer)")
    create.set_defaults(handler=cmd_topics_create)

    kafka = commands.add_parser("kafka", help="Apache Kafka's TLS")
    kafka_commands = kafka.add_subparsers(dest="kafka_command", required=True)
    certs = kafka_commands.add_parser("certs", help="write a private CA (ca.pem) and the brokers' key and "
                                                    "certificate (broker.pem) for docker-compose.yml")
    certs.add_argument("--out", type=Path, required=True, help="directory (e.g. secrets/kafka)")
    certs.add_argument("--host", action="append", dest="hosts",
                       help="a name or address the brokers answer on (repeat; default: kafka, kafka-1, kafka-2, "
                            "kafka-3, localhost)")
    certs.add_argument("--days", type=int, default=825, help="validity (default 825)")
    certs.set_defaults(handler=cmd_kafka_certs)


def cmd_topics_create(args: argparse.Namespace) -> int:
    from streams.topics import create_topics

    settings = command_settings(args)
    configure_logging(settings.log_format, settings.log_level)
    reach_broker(settings)
    created = create_topics(settings.bootstrap, settings.partitions, replication=settings.replication_factor)
    print(f"{len(created)} topic(s) created" + (f": {', '.join(created)}" if created else ""))
    if args.acls:
        from streams.kafka_acls import apply_acls

        granted, revoked = apply_acls(settings.bootstrap)
        print(f"ACLs: {granted} created, {revoked} deleted")
    return 0


def cmd_kafka_certs(args: argparse.Namespace) -> int:
    from streams.kafka_certs import write_certificates

    if args.days < 1:
        raise UsageError("--days: at least 1")
    hosts = args.hosts or ["kafka", "kafka-1", "kafka-2", "kafka-3", "localhost"]
    ca, broker = write_certificates(args.out, hosts, args.days)
    print(f"{ca} (give it to every client), {broker} (the brokers' key: keep it secret) for {', '.join(hosts)}")
    return 0
