# cachenode: thin wrappers over meson. `make run` and `make test` work on a
# fresh Debian 12 machine: they install what is missing first.
BUILD      ?= build
ASAN_BUILD ?= build-asan
ARGS       ?=
N          ?= 3
CLUSTER    ?= demo
MESON_TEST  = meson test --print-errorlogs --num-processes 2

.PHONY: all deps build run test test-asan bench bench-rdma cluster cluster-down clean

all: build

deps:
	@scripts/install-deps.sh build

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=debugoptimized

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Start one node in the foreground on its defaults (127.0.0.1:7700, 1 GiB L1).
run: build
	@echo "cachenode: starting; query it with: $(BUILD)/tools/cachenode-cli --node 127.0.0.1:7700 stat"
	exec $(BUILD)/node/cachenode $(ARGS)

# Every suite, then the unit and integration suites again under ASan+UBSan.
test:
	@scripts/install-deps.sh test
	$(MAKE) --no-print-directory build
	$(MESON_TEST) -C $(BUILD)
	@scripts/skipped.sh $(BUILD)
	$(MAKE) --no-print-directory test-asan

test-asan: $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(MESON_TEST) -C $(ASAN_BUILD) --suite unit --suite integration --timeout-multiplier 3

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

# Side-by-side comparison on loopback; writes docs/benchmarks.md's tables.
bench:
	@scripts/install-deps.sh bench
	$(MAKE) --no-print-directory build
	BUILD=$(BUILD) scripts/bench.sh

# In one soft-RoCE VM boot: perftest vs cachenode-rdma-bench on the same rxe device.
bench-rdma:
	@scripts/install-deps.sh test
	$(MAKE) --no-print-directory build
	BUILD=$(BUILD) scripts/bench-rdma.sh

# As root: redis-server and N nodes, each in its own network namespace on one bridge
# (10.78.0.0/24 by default; scripts/cluster.sh lists the knobs). Prints how to reach them.
cluster: build
	@scripts/install-deps.sh cluster
	BUILD=$(BUILD) CLUSTER=$(CLUSTER) scripts/cluster.sh up $(N)

cluster-down:
	BUILD=$(BUILD) scripts/cluster.sh down

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
