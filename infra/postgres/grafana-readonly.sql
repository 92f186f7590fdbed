-- Least privilege for Grafana: a login role that can read the read model and nothing else
-- (not the API tokens, not the archive's envelopes). Idempotent; run after the projector has
-- created the schema (the compose job `db-grants` does), with the password as a psql variable:
--   psql -v grafana_password="$GRAFANA_DB_PASSWORD" -f grafana-readonly.sql
\set ON_ERROR_STOP on
SELECT format('CREATE ROLE grafana_ro LOGIN PASSWORD %L', :'grafana_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'grafana_ro')
\gexec
ALTER ROLE grafana_ro WITH LOGIN PASSWORD :'grafana_password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
ALTER ROLE grafana_ro SET default_transaction_read_only = on;
GRANT USAGE ON SCHEMA public TO grafana_ro;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM grafana_ro;
GRANT SELECT ON tickets, sla_clocks, projection_checkpoints, dead_letters TO grafana_ro;
