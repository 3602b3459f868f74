# shellcheck shell=bash
# processes.sh: process and port helpers shared by the scripts that start servers (run.sh, bench.sh,
# pulsar.sh, centrifugo.sh). Sourced, never run; the caller defines log and die.

# abs_dir DIR: creates DIR and prints its absolute path.
abs_dir() {
	mkdir -p "$1"
	(cd "$1" && pwd)
}

# port_in_use PORT: something listens on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: a free loopback TCP port below Linux's ephemeral range (32768 and up), where servers' own
# outgoing connections (and Pulsar's bookie) take their ports.
free_port() {
	local port
	for _ in $(seq 1 200); do
		port=$((10000 + RANDOM % 20000))
		if ! port_in_use "$port"; then
			echo "$port"
			return
		fi
	done
	die "no free port found"
}

# alive PID: the process exists and is not a zombie.
alive() {
	local state
	state="$(sed -n 's/^[0-9]* (.*) \([A-Z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null)" || return 1
	[[ -n "$state" && "$state" != Z ]]
}

# stop_process NAME PID: SIGTERM to a child of this shell, SIGKILL when it has not stopped within 15 s.
stop_process() {
	local name="$1" pid="$2"
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 150); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "$name did not stop within 15s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

# pid_from_file PIDFILE MARKER: prints the pid PIDFILE holds when that process still runs with MARKER in its
# command line (pids are reused; a zombie has an empty command line).
pid_from_file() {
	local pid
	[[ -f "$1" ]] || return 1
	pid="$(cat "$1")"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
	echo "$pid"
}

# wait_ready_http NAME URL PID LOGFILE SECONDS: polls URL/readyz until it answers 200; exits the script with
# LOGFILE's last lines when PID exits first or SECONDS pass.
wait_ready_http() {
	local name="$1" url="$2" pid="$3" log_file="$4" limit="$5"
	local deadline=$((SECONDS + limit))
	until curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited during start-up; last lines of $log_file:"
			tail -n 30 "$log_file" >&2
			exit 1
		fi
		if ((SECONDS > deadline)); then
			log "$name not ready after ${limit}s: $(curl -sS "$url/readyz" 2>&1 || true)"
			tail -n 30 "$log_file" >&2
			exit 1
		fi
		sleep 0.2
	done
}
