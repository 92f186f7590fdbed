"""The audit: rebuild any past moment from the event log to settle a dispute.

One module a job:

- ``sources``: the log as records, from the SQL archive (``kafka_source``: from the topic,
  the one module of the audit that reaches Kafka);
- ``integrity``: the checks of what is read (the archive's hash chain, one ticket's rows
  against the Merkle tree, a topic against the archive) and their findings;
- ``replay``: the fold of the log with the very same ``sla/`` code as the live pipeline,
  and ``verify_projection``, the SQL projection against a fresh replay;
- ``dispute_file``: the machine-readable dispute file the replay is written as.

``as_of`` answers "what did you know when you declared the breach?": events recorded after
that moment are ignored, and next to it the file shows what the full log says about that
same moment today (late events, retractions). Any finding is reported at the top of the
file and makes the command fail.
"""
