#!/usr/bin/env bash
# Run the tests on any machine, a fresh one included: install and start what they need, then pytest.
#
#   bash scripts/test.sh python3 -m pytest -q    # everything: the README's test command, what .ci/run does
#   bash scripts/test.sh -m "not slow"           # pytest options alone: python3 -m pytest -q with them
#
# 1. pip install -r requirements.txt -c constraints.txt, then the project: pip install --no-deps -e .
#    (PINSAGE_SKIP_INSTALL=1 skips both)
# 2. chromium (tests/serve/test_report.py): Debian's package, apt-get installed when missing.
#    No browser is ever downloaded (no `playwright install`): the tests launch Debian's /usr/bin/chromium.
# 3. PostgreSQL (tests/orchestration/test_e2e_production.py, trust auth): the server at $PINSAGE_E2E_PG
#    (default "host=127.0.0.1 port=5432 user=postgres") when one answers there; otherwise a private
#    throw-away server from Debian's binaries (apt-get installed when missing) that listens on no TCP
#    port, only on a unix socket in a 0700 temporary directory (so no other local user can reach its
#    trust-authenticated superuser), with its data there too, stopped and deleted when this script exits.
#    The system cluster is never started or changed.
# 4. the command given (none: python3 -m pytest -q; options only: pytest with them); the script exits
#    with its status.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PINSAGE_E2E_PG="${PINSAGE_E2E_PG:-host=127.0.0.1 port=5432 user=postgres}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

say() { echo "==> $*"; }
die() { echo "!! $*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

SUDO=()  # for apt-get: nothing as root, sudo when there is one
is_root || ! command -v sudo >/dev/null || SUDO=(sudo)
APT_UPDATED=0
apt_install() {  # apt_install PACKAGE...: Debian's packages, or a message saying what to install
  if ! is_root && [ ${#SUDO[@]} = 0 ]; then
    die "not root and no sudo: install Debian's package(s) '$*' (apt-get install $*) and rerun"
  fi
  command -v apt-get >/dev/null || die "no apt-get here: install '$*' (Debian's package names) and rerun"
  if [ "$APT_UPDATED" = 0 ]; then
    "${SUDO[@]}" apt-get update -qq
    APT_UPDATED=1
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Whatever this script sets up for the run is undone when it exits, on success, failure or Ctrl-C.
POLICY=/usr/sbin/policy-rc.d OWN_POLICY=0 PG_TMP="" PG_BIN=""
cleanup() {
  local rc=$?
  if [ "$OWN_POLICY" = 1 ]; then "${SUDO[@]}" rm -f "$POLICY" || true; fi
  if [ -n "$PG_TMP" ]; then
    if [ -f "$PG_TMP/data/postmaster.pid" ]; then
      as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
        || as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_TMP" || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Python requirements ---------------------------------------------------------------------------
if [ "${PINSAGE_SKIP_INSTALL:-0}" != "1" ]; then
  say "pip: installing requirements.txt -c constraints.txt and the project (-e .)"
  "$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
fi

# What the tests write from here on (temporary stores, logs, the private server) is this user's only.
umask 077

# 2. Chromium --------------------------------------------------------------------------------------
if ! command -v chromium >/dev/null; then
  say "chromium: installing Debian's chromium"
  apt_install chromium
  command -v chromium >/dev/null || die "chromium is still not on PATH after installing Debian's chromium package"
fi

# 3. PostgreSQL ------------------------------------------------------------------------------------
pg_answers() {  # does a server accept "$1 dbname=postgres" (as the e2e test connects)?
  "$PY" - "$1" >/dev/null 2>&1 <<'PY'
import sys, psycopg
psycopg.connect(sys.argv[1] + " dbname=postgres", connect_timeout=3).close()
PY
}
pg_bindir() {  # the newest of Debian's /usr/lib/postgresql/*/bin with initdb and pg_ctl, or nothing
  local d found=""
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then found="$d"; fi
  done
  echo "$found"
}
as_pg() {  # initdb and postgres refuse to run as root: then run them as Debian's postgres user
  if is_root; then (cd "$PG_TMP" && runuser -u postgres -- "$@"); else (cd "$PG_TMP" && "$@"); fi
}

if pg_answers "$PINSAGE_E2E_PG"; then
  say "PostgreSQL: using the server at '$PINSAGE_E2E_PG'"
else
  PG_BIN="$(pg_bindir)"
  if [ -z "$PG_BIN" ]; then
    say "PostgreSQL: installing Debian's postgresql (its binaries only are used)"
    # Keep the package's scripts from starting the system cluster: Debian's policy-rc.d, only while
    # installing, and only where the machine has none of its own.
    if [ ! -e "$POLICY" ] && command -v apt-get >/dev/null && { is_root || [ ${#SUDO[@]} != 0 ]; }; then
      printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
      OWN_POLICY=1
      "${SUDO[@]}" chmod 755 "$POLICY"
    fi
    apt_install postgresql
    if [ "$OWN_POLICY" = 1 ]; then "${SUDO[@]}" rm -f "$POLICY"; OWN_POLICY=0; fi
    PG_BIN="$(pg_bindir)"
    [ -n "$PG_BIN" ] || die "no initdb/pg_ctl under /usr/lib/postgresql/*/bin after installing Debian's postgresql"
  fi
  if is_root; then
    id postgres >/dev/null 2>&1 || die "running as root without a 'postgres' user to run initdb/postgres as (Debian's postgresql package creates it)"
    command -v runuser >/dev/null || die "running as root without runuser (util-linux) to run initdb/postgres as 'postgres'"
  fi
  PG_PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # under /tmp, not $TMPDIR: the postgres user must reach it, and a unix socket path has ~100 bytes at most;
  # mktemp makes it 0700: only its owner (and root) can reach the socket inside
  PG_TMP="$(mktemp -d /tmp/pinsage-pg.XXXXXX)"
  say "PostgreSQL: none at '$PINSAGE_E2E_PG', starting a private server on the socket in $PG_TMP"
  if is_root; then chown postgres: "$PG_TMP"; fi
  chmod 700 "$PG_TMP"
  if ! as_pg "$PG_BIN/initdb" -D "$PG_TMP/data" --auth=trust -U postgres -E UTF8 --locale=C --no-sync \
      >"$PG_TMP/initdb.log" 2>&1; then
    cat "$PG_TMP/initdb.log" >&2; die "initdb failed"
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/postgres.log" -w -t 60 \
      -o "-c listen_addresses= -p $PG_PORT -c unix_socket_directories=$PG_TMP -c unix_socket_permissions=0700 -c fsync=off" \
      start >/dev/null; then
    cat "$PG_TMP/postgres.log" >&2; die "the private PostgreSQL server did not start"
  fi
  export PINSAGE_E2E_PG="host=$PG_TMP port=$PG_PORT user=postgres"
  pg_answers "$PINSAGE_E2E_PG" || { cat "$PG_TMP/postgres.log" >&2; die "the private PostgreSQL server does not answer"; }
fi

# 4. The tests: the command given (the README's: python3 -m pytest -q), or pytest with these options ---
if [ $# = 0 ]; then
  set -- "$PY" -m pytest -q
elif [ "${1#-}" != "$1" ]; then
  set -- "$PY" -m pytest -q "$@"
fi
"$@"  # not exec: the trap above must stop the private server afterwards
