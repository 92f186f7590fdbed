"""The brokers dev mode, the tests and the benches start on loopback: Tansu (``embedded``) and
Apache Kafka (``kafka_cluster``).

Launchers, not runtime: the worker and the other product processes only ever connect to a
broker (``streams/``), and a production image has no dev extra, hence no Tansu. They sit in
the entry-point package because ``slaledger dev`` is their one product caller; an
import-linter contract keeps every other product module off them.
"""
