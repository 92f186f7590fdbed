"""Kafka stream processing (Faust): topics, agents, timers, the HTTP command API."""
