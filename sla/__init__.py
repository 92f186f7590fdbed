"""The SLA domain: events, the ticket state machine, calendars, the policy and the clock fold.

Pure Python: no I/O and no import from the rest of slaledger, so the live pipeline and the
audit replay run exactly the same code.
"""
