"""Kafka only: topics, Kafka tools and security, the Tansu workarounds, the table store, and the
Faust worker (single writer per ticket, deadline timer, outcomes). It connects to brokers and
starts none: the dev and test launchers are ``slaledger.brokers``."""
