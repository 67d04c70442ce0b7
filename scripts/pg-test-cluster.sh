#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for the test suite and the benchmarks.
#
#   scripts/pg-test-cluster.sh start     create (first time) and start the cluster; idempotent
#   scripts/pg-test-cluster.sh stop      stop it (ok if it is not running)
#   scripts/pg-test-cluster.sh url       print the URL of the test database
#   scripts/pg-test-cluster.sh status    say whether it runs, where, on which port
#   scripts/pg-test-cluster.sh destroy   stop it and delete its files
#   scripts/pg-test-cluster.sh bindir    print PostgreSQL's bin directory; exit 1 if none (no install)
#
# The cluster lives in $PWD/.pg (data in .pg/data, unix socket and log in .pg), listens on
# 127.0.0.1 only, port $EGIDE_TEST_PG_PORT (default 54329), trusts every local connection and
# runs with fsync, synchronous_commit and full_page_writes off: it is for tests, never for data.
# The superuser is `postgres` and the database `egide_test` exists; tests create more.
#
# PostgreSQL refuses to run as root: when run as root the cluster belongs to the `postgres`
# system user, and if that user cannot reach $PWD the cluster goes to /tmp/egide-pg-<hash>.
# If no PostgreSQL server is found it is installed from Debian packages (root only).
# Environment: EGIDE_TEST_PG_PORT, EGIDE_PG_BINDIR (a directory holding initdb and pg_ctl).
set -euo pipefail

PORT="${EGIDE_TEST_PG_PORT:-54329}"
DB=egide_test
PGUSER_NAME=postgres
HOST=127.0.0.1

say() { printf '==> %s\n' "$*"; }
die() { printf 'pg-test-cluster: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as the user owning the cluster (postgres when we are root), from a directory
# that user can read.
as_owner() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# --- finding (or installing) PostgreSQL -----------------------------------------------------

has_server() { [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]; }

find_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$dir" ] && has_server "$dir"; then echo "$dir"; return 0; fi
    fi
    # Debian layout, newest major version first.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn); do
        if has_server "$dir"; then echo "$dir"; return 0; fi
    done
    if command -v initdb >/dev/null 2>&1; then
        dir="$(dirname "$(command -v initdb)")"
        if has_server "$dir"; then echo "$dir"; return 0; fi
    fi
    return 1
}

install_postgres() {
    if ! is_root; then
        die "PostgreSQL server not found: install it (Debian/Ubuntu: sudo apt-get install postgresql) or set EGIDE_PG_BINDIR"
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "PostgreSQL server not found and apt-get is missing: install PostgreSQL, or set EGIDE_PG_BINDIR"
    say "installing PostgreSQL from Debian packages (apt-get install postgresql)"
    local log
    log="$(mktemp)"
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
            --no-install-recommends postgresql; } </dev/null >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "apt-get install postgresql failed"
    fi
    rm -f "$log"
}

BINDIR=""
# Set BINDIR if PostgreSQL is here; never installs.
have_bindir() {
    [ -n "$BINDIR" ] && return 0
    if [ -n "${EGIDE_PG_BINDIR:-}" ]; then
        has_server "$EGIDE_PG_BINDIR" || die "EGIDE_PG_BINDIR=$EGIDE_PG_BINDIR holds no initdb/pg_ctl/postgres"
        BINDIR="$EGIDE_PG_BINDIR"
    else
        BINDIR="$(find_bindir)" || { BINDIR=""; return 1; }
    fi
}

# Set BINDIR, installing PostgreSQL if needed.
need_bindir() {
    if ! have_bindir; then
        install_postgres
        have_bindir || die "PostgreSQL was installed but initdb/pg_ctl were not found"
    fi
    if is_root; then
        id postgres >/dev/null 2>&1 \
            || die "running as root needs the 'postgres' system user (it comes with the postgresql package)"
        command -v runuser >/dev/null 2>&1 || die "running as root needs runuser (util-linux)"
    fi
}

# --- where the cluster lives ----------------------------------------------------------------

TMP_ROOT="/tmp/egide-pg-$(printf '%s' "$PWD" | sha256sum | cut -c1-12)"

# Decide once, deterministically: an existing cluster wins; otherwise $PWD/.pg when the owner
# can reach it (and the socket path fits the 107-byte limit), else /tmp/egide-pg-<hash>.
cluster_root() {
    if [ -f "$PWD/.pg/data/PG_VERSION" ]; then echo "$PWD/.pg"; return; fi
    if [ -f "$TMP_ROOT/data/PG_VERSION" ]; then echo "$TMP_ROOT"; return; fi
    local sock="$PWD/.pg/.s.PGSQL.$PORT.lock"
    if [ "${#sock}" -gt 100 ]; then echo "$TMP_ROOT"; return; fi
    if is_root && id postgres >/dev/null 2>&1; then
        # Can postgres traverse every directory down to $PWD?
        local here="$PWD"
        if ! (cd / && runuser -u postgres -- test -x "$here") 2>/dev/null; then
            echo "$TMP_ROOT"; return
        fi
    fi
    echo "$PWD/.pg"
}

ROOT="$(cluster_root)"
DATA="$ROOT/data"
LOG="$ROOT/postgres.log"

is_running() {
    [ -f "$DATA/PG_VERSION" ] || return 1
    have_bindir || return 1   # no PostgreSQL here: nothing can be running
    as_owner "$BINDIR/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

# The port the running server listens on (4th line of postmaster.pid), else the wanted one.
running_port() {
    local p=""
    if [ -r "$DATA/postmaster.pid" ]; then p="$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)"; fi
    echo "${p:-$PORT}"
}

url() { echo "postgresql://$PGUSER_NAME@$HOST:$(running_port)/$DB"; }

psql_admin() {
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$(running_port)" -U "$PGUSER_NAME" \
        -d postgres "$@"
}

# Create $ROOT for the cluster's owner; refuse a symlink or someone else's directory (it may be
# under /tmp).
make_root() {
    if [ -L "$ROOT" ] || { [ -e "$ROOT" ] && [ ! -d "$ROOT" ]; }; then
        die "$ROOT is not a plain directory: remove it"
    fi
    mkdir -p "$ROOT"
    local owner
    owner="$(stat -c %U "$ROOT")"
    if [ "$owner" != "$(id -un)" ] && [ "$owner" != postgres ]; then
        die "$ROOT belongs to $owner: remove it"
    fi
    if is_root; then chown postgres: "$ROOT"; fi
    chmod 700 "$ROOT"
}

init_cluster() {
    say "creating PostgreSQL test cluster in $DATA"
    rm -rf "$DATA"
    local out
    if ! out="$(as_owner "$BINDIR/initdb" -D "$DATA" --auth=trust --username="$PGUSER_NAME" \
            --encoding=UTF8 --no-locale --no-instructions 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "initdb failed"
    fi
    # Test-only settings. The per-start settings (port, socket) go to egide-runtime.conf.
    as_owner tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# --- Égide throwaway test cluster (scripts/pg-test-cluster.sh) ---
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
log_min_messages = warning
log_min_error_statement = panic
include_if_exists = 'egide-runtime.conf'
EOF
}

start() {
    need_bindir
    make_root
    exec 9>>"$ROOT/start.lock"   # serialise concurrent starts (fd 9 is closed for the server)
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    if is_running; then
        say "PostgreSQL test cluster already running on $HOST:$(running_port) ($DATA)"
    else
        if [ -f "$DATA/PG_VERSION" ]; then
            # Throwaway data: after a PostgreSQL major upgrade, recreate rather than fail.
            local have want
            have="$(cat "$DATA/PG_VERSION")"
            want="$("$BINDIR/postgres" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')"
            if [ "$have" != "$want" ]; then
                say "the test cluster was made by PostgreSQL $have, the server is $want: recreating it"
                as_owner rm -rf "$DATA"
            fi
        fi
        [ -f "$DATA/PG_VERSION" ] || init_cluster
        printf "port = %s\nunix_socket_directories = '%s'\n" "$PORT" "$ROOT" \
            | as_owner tee "$DATA/egide-runtime.conf" >/dev/null
        say "starting PostgreSQL test cluster on $HOST:$PORT"
        local out
        if ! out="$(as_owner "$BINDIR/pg_ctl" start -w -t 60 -s -D "$DATA" -l "$LOG" 2>&1 9>&-)"; then
            printf '%s\n' "$out" >&2
            tail -n 20 "$LOG" >&2 2>/dev/null || true
            die "PostgreSQL did not start (is port $PORT taken? set EGIDE_TEST_PG_PORT); log: $LOG"
        fi
    fi
    if [ -z "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
        psql_admin -c "CREATE DATABASE $DB"
    fi
}

stop() {
    if is_running; then
        say "stopping PostgreSQL test cluster ($DATA)"
        as_owner "$BINDIR/pg_ctl" stop -w -s -m fast -D "$DATA" >/dev/null
    fi
}

status() {
    if is_running; then
        echo "running: $(url) ($DATA)"
    elif [ -f "$DATA/PG_VERSION" ]; then
        echo "stopped ($DATA)"; return 3
    else
        echo "absent ($DATA)"; return 3
    fi
}

destroy() {
    stop
    if [ -e "$ROOT" ]; then
        say "removing $ROOT"
        rm -rf "$ROOT"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    url) url ;;
    status) status ;;
    destroy) destroy ;;
    bindir) have_bindir && echo "$BINDIR" ;;
    *) echo "usage: $0 start|stop|url|status|destroy|bindir" >&2; exit 2 ;;
esac
