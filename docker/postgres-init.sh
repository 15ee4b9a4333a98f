#!/usr/bin/env bash
# Runs once, when the PostgreSQL volume is empty: one role per service, each owning its own database
# and nothing else (the services never connect as the superuser; no one else may connect to a
# service's database). Passwords go in as psql variables, quoted by psql (:'name'), never spliced into
# the SQL text. The names default to airflow and mlflow (the test suite runs it with names of its own).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v airflow="${AIRFLOW_DB_NAME:-airflow}" -v airflow_pw="$AIRFLOW_DB_PASSWORD" \
     -v mlflow="${MLFLOW_DB_NAME:-mlflow}" -v mlflow_pw="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE :"airflow" LOGIN PASSWORD :'airflow_pw' NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE DATABASE :"airflow" OWNER :"airflow";
REVOKE ALL ON DATABASE :"airflow" FROM PUBLIC;
CREATE ROLE :"mlflow" LOGIN PASSWORD :'mlflow_pw' NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE DATABASE :"mlflow" OWNER :"mlflow";
REVOKE ALL ON DATABASE :"mlflow" FROM PUBLIC;
SQL
