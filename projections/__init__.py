"""Read models fed by events: SQL, metrics, the archive, audit replay."""
