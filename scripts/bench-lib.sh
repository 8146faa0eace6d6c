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
