-- The team setup's roles and databases. Run once, as a PostgreSQL superuser, with psql:
--   MLFLOW_DB_PASSWORD=... UNLEARNOPS_DB_PASSWORD=... psql -v ON_ERROR_STOP=1 -f 10-team-roles.sql
-- (deploy/team-up.sh does; the compose file mounts this folder as the image's init scripts).
-- Passwords come from the environment (\getenv), never from the command line.
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv app_password UNLEARNOPS_DB_PASSWORD

-- MLflow's tracking/registry store and basic-auth's user store.
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;

-- The audit log: the application role `unlearnops` may read and append, nothing else (20-audit.sql).
CREATE ROLE unlearnops LOGIN PASSWORD :'app_password';
CREATE DATABASE unlearnops;
REVOKE ALL ON DATABASE unlearnops FROM PUBLIC;
GRANT CONNECT ON DATABASE unlearnops TO unlearnops;
