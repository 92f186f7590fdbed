"""The application service: what the product does with a command, without Kafka, SQL or HTTP.

It sits between the adapters and the domain (``sla/``): the Kafka worker (``streams/``)
feeds it decoded records and sends what it returns; the HTTP layer (``slaledger.web``)
builds commands, knows who asks (``principal``) and reads the answers (``outcomes``). The
decision itself, with every rule of the convention, is the domain's (``sla.ticket.decide``).
"""
