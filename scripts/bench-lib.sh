# Helpers shared by the benchmark scripts (sourced, not run).

# A loopback TCP port nobody listens on right now.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Wait up to 10 s until something listens on loopback port $1.
wait_port() {
	for _ in $(seq 1 100); do
		if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$1)))"; then
			return 0
		fi
		sleep 0.1
	done
	echo "nothing listening on port $1" >&2
	return 1
}

# Put the table in file $2 into docs/benchmarks.md between <!-- $1:begin --> and <!-- $1:end -->,
# stamped "Last run: <UTC time> by $3". Does nothing when NO_DOC is set.
doc_table() { # marker table-file by
	[ -z "${NO_DOC:-}" ] || return 0
	python3 - docs/benchmarks.md "$1" "$2" "$3" <<'PY'
import sys, datetime
doc, marker, table, by = sys.argv[1], sys.argv[2], open(sys.argv[3]).read(), sys.argv[4]
text = open(doc).read()
b, e = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
head, rest = text.split(b, 1)
_, tail = rest.split(e, 1)
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
open(doc, "w").write(f"{head}{b}\n_Last run: {stamp} by {by}._\n\n{table}\n{e}{tail}")
PY
	echo "docs/benchmarks.md updated ($1)" >&2
}
