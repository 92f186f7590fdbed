"""Kafka only: topics, Kafka tools and security, the brokers (embedded Tansu, Apache Kafka), the
table store, and the Faust worker (single writer per ticket, deadline timer, outcomes)."""
