#!/bin/sh
# Writes pgbouncer.ini and the user list from the environment, then runs PgBouncer in the
# foreground. Transaction pooling: the workers must run with PG_TRANSACTION_POOLING=true and,
# PgBouncer being 1.18 here, PG_STATEMENT_CACHE_SIZE=0 (docs/scaling.md).
set -eu

: "${PGBOUNCER_DIR:=/tmp/pgbouncer}"
: "${POSTGRES_HOST:=postgres}"
: "${POSTGRES_PORT:=5432}"
: "${DB_USER:?the role the workers log in as}"
: "${DB_PASSWORD:?its password}"
: "${LISTEN_PORT:=6432}"
: "${POOL_MODE:=transaction}"
: "${DEFAULT_POOL_SIZE:=20}"
: "${MAX_CLIENT_CONN:=1000}"

mkdir -p "$PGBOUNCER_DIR"
umask 077
# A plain-text password lets PgBouncer check the client (SCRAM) and log in to PostgreSQL with it.
printf '"%s" "%s"\n' "$DB_USER" "$DB_PASSWORD" > "$PGBOUNCER_DIR/userlist.txt"
cat > "$PGBOUNCER_DIR/pgbouncer.ini" <<INI
[databases]
* = host=$POSTGRES_HOST port=$POSTGRES_PORT

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = $LISTEN_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $PGBOUNCER_DIR/userlist.txt
pool_mode = $POOL_MODE
default_pool_size = $DEFAULT_POOL_SIZE
max_client_conn = $MAX_CLIENT_CONN
ignore_startup_parameters = extra_float_digits
INI
exec pgbouncer "$PGBOUNCER_DIR/pgbouncer.ini"
