#!/usr/bin/env bash
# The demo: builds the images if missing, starts a PostgreSQL 13 database with sample data in
# a container (demo-db, volume demo-db-data), checks and upgrades it to 17 on the
# pgup/postgres:17 image, shows the verification and the status, then rolls back to 13.
# Run it again to start over; `scripts/demo.sh --remove` removes the demo.
set -euo pipefail
cd "$(dirname "$0")/.."

name=demo-db
volume=demo-db-data
docker ps -aq --filter "name=^$name" | xargs -r docker rm -f -v >/dev/null
docker volume rm -f "$volume" >/dev/null 2>&1 || true
[ "${1:-}" = --remove ] && { echo "demo removed"; exit 0; }

bash scripts/setup.sh
cargo build --release --locked -q
pgup=target/release/pgup

step() { printf '\n==> %s\n' "$*"; }

step "starting PostgreSQL 13 in container $name (volume $volume)"
# The password reaches docker through the environment, never the command line.
export POSTGRES_PASSWORD=demo-$RANDOM$RANDOM
docker run -d --name "$name" -v "$volume:/var/lib/postgresql/data" \
	-e POSTGRES_PASSWORD -e POSTGRES_USER=app -e POSTGRES_DB=shop pgup/postgres:13 >/dev/null
until docker exec "$name" pg_isready -q -U app -d shop -h 127.0.0.1 2>/dev/null; do sleep 0.5; done

step "loading sample data"
docker exec -i "$name" psql -q -v ON_ERROR_STOP=1 -U app -d shop <<'SQL'
CREATE EXTENSION pg_trgm;
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers, total numeric(10,2), placed timestamptz);
INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 10000) g;
INSERT INTO orders (customer, total, placed)
  SELECT 1 + g % 10000, (g % 500) + 0.99, '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 100000) g;
CREATE INDEX customers_name_trgm ON customers USING gin (name gin_trgm_ops);
SQL
docker exec "$name" psql -U app -d shop -c "SELECT count(*) AS customers, (SELECT count(*) FROM orders) AS orders FROM customers"

step "pgup status --container $name"
"$pgup" status --container "$name"

step "pgup check --container $name --to 17 --new-image pgup/postgres:17"
"$pgup" check --container "$name" --to 17 --new-image pgup/postgres:17

step "pgup upgrade --container $name --to 17 --new-image pgup/postgres:17 --yes"
"$pgup" upgrade --container "$name" --to 17 --new-image pgup/postgres:17 --yes

step "the data, on PostgreSQL 17"
until docker exec "$name" pg_isready -q -U app -d shop 2>/dev/null; do sleep 0.5; done
docker exec "$name" psql -U app -d shop -c "SELECT version()" \
	-c "SELECT count(*) AS customers, (SELECT count(*) FROM orders) AS orders FROM customers" \
	-c "SELECT name FROM customers ORDER BY name <-> 'customer 4242' LIMIT 3"

step "pgup status --container $name"
"$pgup" status --container "$name"

step "pgup rollback --container $name --yes (back to the exact PostgreSQL 13 cluster)"
"$pgup" rollback --container "$name" --yes
until docker exec "$name" pg_isready -q -U app -d shop 2>/dev/null; do sleep 0.5; done
docker exec "$name" psql -U app -d shop -c "SELECT version()" \
	-c "SELECT count(*) AS customers, (SELECT count(*) FROM orders) AS orders FROM customers"

step "pgup status --container $name"
"$pgup" status --container "$name"

echo
echo "Upgrade again with: $pgup upgrade --container $name --to 17 --new-image pgup/postgres:17"
echo "Remove the demo with: scripts/demo.sh --remove"
