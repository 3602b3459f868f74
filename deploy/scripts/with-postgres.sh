#!/usr/bin/env bash
# with-postgres.sh CMD [ARG...]: runs CMD with a throw-away PostgreSQL server (temp dir, free loopback port)
# whose admin URL is exported as PDS_TEST_DATABASE_URL; the server and its data are removed when CMD ends,
# whether it passed, failed or was interrupted. make test uses it.
set -euo pipefail

[[ $# -gt 0 ]] || { echo "usage: with-postgres.sh CMD [ARG...]" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/pds-test-pg.XXXXXX")"
# user postgres must be able to reach the data directory inside.
chmod 755 "$tmp"
cleanup() {
	"$here/postgres.sh" stop "$tmp/data" || echo "with-postgres.sh: stopping PostgreSQL in $tmp/data failed" >&2
	rm -rf "$tmp"
}
trap cleanup EXIT

port="$("$here/postgres.sh" free-port)"
PDS_TEST_DATABASE_URL="$("$here/postgres.sh" start "$tmp/data" "$port")"
export PDS_TEST_DATABASE_URL
echo "with-postgres.sh: PostgreSQL at $PDS_TEST_DATABASE_URL" >&2
"$@"
