#!/bin/bash
# Gives MLflow its own database beside the Optuna one, on the same PostgreSQL server.
#
# The postgres image runs this once, from /docker-entrypoint-initdb.d, when its data volume is
# first initialised (docker-compose.yml mounts it there). On a volume made before this script was
# mounted, run it by hand: docker compose exec postgres bash /docker-entrypoint-initdb.d/10-mlflow-db.sh
# Idempotent: it creates the database only when it is missing.
#
# Reads POSTGRES_USER, POSTGRES_DB (the image's own variables) and MLFLOW_DB.
set -eo pipefail

if [ -z "${MLFLOW_DB:-}" ]; then
  echo "init-mlflow-db: MLFLOW_DB is not set (the name of MLflow's database, e.g. mlflow)" >&2
  exit 2
fi

# format(%I) quotes the names, so any database or role name is safe here.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
  --dbname "${POSTGRES_DB:-postgres}" \
  --set=db="${MLFLOW_DB}" --set=owner="${POSTGRES_USER:-postgres}" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
echo "init-mlflow-db: database ${MLFLOW_DB} is ready"
