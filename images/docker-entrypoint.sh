#!/usr/bin/env bash
# Entrypoint of pgup's server images: what users rely on in the official postgres images.
# - started as root: creates PGDATA, gives it to postgres (mode 0700), re-runs itself as postgres;
# - an empty PGDATA: initdb with POSTGRES_USER (bootstrap superuser), POSTGRES_PASSWORD,
#   POSTGRES_DB, POSTGRES_INITDB_ARGS and POSTGRES_INITDB_WALDIR (made and given to postgres
#   as PGDATA is), `host all all all` with password authentication,
#   listen_addresses = '*', then /docker-entrypoint-initdb.d/*.{sh,sql,sql.gz};
# - finally execs the server as PID 1, so the image's stop signal reaches it directly.
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

fail() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

init_cluster() {
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
		fail "the database is uninitialized and POSTGRES_PASSWORD is not set; pass -e POSTGRES_PASSWORD=... (or POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password)"
	fi
	local user=${POSTGRES_USER:-postgres}
	local db=${POSTGRES_DB:-$user}
	# The password goes through a pipe, never onto a command line.
	local waldir=()
	[ -z "${POSTGRES_INITDB_WALDIR:-}" ] || waldir=(--waldir "$POSTGRES_INITDB_WALDIR")
	eval 'initdb --username="$user" --pwfile=<(printf "%s\n" "${POSTGRES_PASSWORD:-}") "${waldir[@]}" '"${POSTGRES_INITDB_ARGS:-}"

	local auth=${POSTGRES_HOST_AUTH_METHOD:-}
	if [ -z "$auth" ]; then
		auth=$(postgres -C password_encryption -D "$PGDATA")
	fi
	printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
	sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$PGDATA/postgresql.conf"

	# A socket-only server for the set-up scripts.
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
	local psql=(psql -v ON_ERROR_STOP=1 --username "$user" --no-password --no-psqlrc)
	if [ "$db" != postgres ]; then
		"${psql[@]}" --dbname postgres --set db="$db" -q <<<'CREATE DATABASE :"db";'
	fi
	local f
	for f in /docker-entrypoint-initdb.d/*; do
		case $f in
		*.sh) echo "running $f" && . "$f" ;;
		*.sql) echo "running $f" && "${psql[@]}" --dbname "$db" -f "$f" ;;
		*.sql.gz) echo "running $f" && gunzip -c "$f" | "${psql[@]}" --dbname "$db" ;;
		*) ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	echo "PostgreSQL init process complete; ready for start up."
}

if [ "$1" = postgres ]; then
	if [ "$(id -u)" = 0 ]; then
		mkdir -p "$PGDATA"
		find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
		chmod 00700 "$PGDATA"
		if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
			mkdir -p "$POSTGRES_INITDB_WALDIR"
			find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres:postgres '{}' +
			chmod 00700 "$POSTGRES_INITDB_WALDIR"
		fi
		mkdir -p /var/run/postgresql
		chown postgres:postgres /var/run/postgresql
		chmod 3777 /var/run/postgresql
		exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
	fi
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		init_cluster
	fi
fi

exec "$@"
