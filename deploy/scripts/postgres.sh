#!/usr/bin/env bash
# postgres.sh: a private PostgreSQL cluster for make run and make test.
#
#   postgres.sh start DIR PORT     initdb DIR when it holds no cluster yet, then start it on 127.0.0.1:PORT
#                                  (trust auth on loopback, unix socket in DIR); prints the admin URL.
#                                  Starting a cluster that already runs is a no-op.
#   postgres.sh stop DIR           stop the cluster in DIR (fast shutdown) when it runs.
#   postgres.sh createdb PORT NAME create database NAME when missing.
#   postgres.sh url PORT [NAME]    print the URL of database NAME (default postgres).
#   postgres.sh free-port          print a free loopback TCP port.
#
# PostgreSQL refuses to run as root, so as root every server command runs as user postgres and DIR is owned
# by postgres; as another user they run as that user.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

pg_bindir() {
	local dir
	if command -v pg_config >/dev/null 2>&1; then
		dir="$(pg_config --bindir 2>/dev/null || true)"
		if [[ -n "$dir" && -x "$dir/initdb" ]]; then
			echo "$dir"
			return
		fi
	fi
	# Debian installs the server binaries per major version; take the newest.
	dir="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
	[[ -n "$dir" && -x "$dir/initdb" ]] || die "PostgreSQL server binaries not found (run deploy/scripts/ensure-deps.sh)"
	echo "$dir"
}

as_pg_user() {
	if [[ "$(id -u)" == 0 ]]; then
		# From / so that a caller's private working directory (mktemp -d) does not trouble user postgres.
		(cd / && runuser -u postgres -- "$@")
	else
		"$@"
	fi
}

url() {
	local port="$1" name="${2:-postgres}"
	echo "postgres://postgres@127.0.0.1:${port}/${name}?sslmode=disable"
}

is_running() {
	local dir="$1" bindir="$2"
	[[ -f "$dir/postmaster.pid" ]] && as_pg_user "$bindir/pg_ctl" -D "$dir" status >/dev/null 2>&1
}

start() {
	local dir="$1" port="$2" bindir
	[[ "$port" =~ ^[0-9]+$ ]] || die "start: PORT must be a number, got \"$port\""
	bindir="$(pg_bindir)"
	mkdir -p "$dir"
	dir="$(cd "$dir" && pwd)"
	if [[ "$(id -u)" == 0 ]]; then
		id postgres >/dev/null 2>&1 || die "user postgres does not exist (install the postgresql package)"
		chown postgres: "$dir"
		runuser -u postgres -- test -x "$dir" ||
			die "user postgres cannot reach $dir: make its parent directories searchable (chmod o+x)"
	fi
	if is_running "$dir" "$bindir"; then
		echo "postgres.sh: cluster in $dir already runs" >&2
		url "$port"
		return
	fi
	if [[ ! -f "$dir/PG_VERSION" ]]; then
		as_pg_user "$bindir/initdb" --pgdata="$dir" --username=postgres --auth=trust --encoding=UTF8 \
			--locale=C >"$dir.initdb.log" 2>&1 || { cat "$dir.initdb.log" >&2; die "initdb $dir failed"; }
		rm -f "$dir.initdb.log"
	fi
	# listen on loopback only: trust auth is safe there and nowhere else.
	as_pg_user "$bindir/pg_ctl" --pgdata="$dir" --log="$dir/postgres.log" --wait --timeout=60 \
		-o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start >/dev/null ||
		{ tail -n 30 "$dir/postgres.log" >&2 || true; die "could not start PostgreSQL in $dir on port $port"; }
	url "$port"
}

stop() {
	local dir="$1" bindir
	bindir="$(pg_bindir)"
	[[ -d "$dir" ]] || return 0
	if is_running "$dir" "$bindir"; then
		as_pg_user "$bindir/pg_ctl" --pgdata="$dir" --mode=fast --wait --timeout=60 stop >/dev/null
	fi
}

createdb() {
	local port="$1" name="$2" bindir exists
	bindir="$(pg_bindir)"
	exists="$("$bindir/psql" "$(url "$port")" -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")"
	if [[ "$exists" != 1 ]]; then
		"$bindir/createdb" --host=127.0.0.1 --port="$port" --username=postgres "$name"
	fi
}

free_port() {
	local port
	for _ in $(seq 1 200); do
		port=$((20000 + RANDOM % 20000))
		# a refused connection means nobody listens there.
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return
		fi
	done
	die "no free port found"
}

case "${1:-}" in
start) [[ $# == 3 ]] || die "usage: postgres.sh start DIR PORT"; start "$2" "$3" ;;
stop) [[ $# == 2 ]] || die "usage: postgres.sh stop DIR"; stop "$2" ;;
createdb) [[ $# == 3 ]] || die "usage: postgres.sh createdb PORT NAME"; createdb "$2" "$3" ;;
url) [[ $# == 2 || $# == 3 ]] || die "usage: postgres.sh url PORT [NAME]"; url "$2" "${3:-postgres}" ;;
free-port) free_port ;;
*) die "usage: postgres.sh start DIR PORT | stop DIR | createdb PORT NAME | url PORT [NAME] | free-port" ;;
esac
