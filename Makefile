# tpasst — build, run, test, benchmark.
# Every target that runs TypeScript first makes sure the pinned Deno exists:
# a `deno` on PATH is used when it is exactly $(DENO_VERSION); otherwise the npm
# package is installed into .tools/.

DENO_VERSION := 2.9.6
TOOLS_DIR    := $(CURDIR)/.tools
LOCAL_DENO   := $(TOOLS_DIR)/node_modules/.bin/deno
SYSTEM_DENO  := $(shell command -v deno 2>/dev/null)
DENO         := $(if $(and $(SYSTEM_DENO),$(findstring deno $(DENO_VERSION),$(shell deno --version 2>/dev/null))),$(SYSTEM_DENO),$(LOCAL_DENO))

CC      ?= cc
CFLAGS  := -Wall -Wextra -Werror -O2 -fPIC -shared -std=gnu11
HELPER  := native/libtpasst_helper.so
HELPER_SOURCES := $(wildcard native/*.c)
HELPER_HEADERS := $(wildcard native/*.h)

# Tests get every permission (they spawn QEMU and the daemon); the daemon under
# test always runs through bin/tpasst with the permission set from deno.json.
TEST_FLAGS := --allow-all --no-prompt
UNIT_PATHS := src/ ffi/ tests/ bench/
# Guests ping through the backends: ping sockets are opened for the run (as root) and
# the host's previous net.ipv4.ping_group_range is put back afterwards.
WITH_PING  := tests/e2e/with_ping_sockets.sh

.PHONY: all deno native start test check e2e bench bench-udp compile demo clean

all: native

deno: $(DENO)

$(LOCAL_DENO):
	mkdir -p $(TOOLS_DIR)
	cd $(TOOLS_DIR) && { [ -f package.json ] || echo '{"name":"tpasst-tools","private":true}' > package.json; } \
	  && npm install --no-audit --no-fund deno@$(DENO_VERSION)

native: $(HELPER)

$(HELPER): $(HELPER_SOURCES) $(HELPER_HEADERS)
	$(CC) $(CFLAGS) -o $@ $(HELPER_SOURCES)

start: native $(DENO)
	bin/tpasst $(ARGS)

check: $(DENO)
	$(DENO) fmt --check
	$(DENO) lint
	$(DENO) check main.ts src/ ffi/ tests/ bench/

test: native $(DENO)
	tests/e2e/guest/build.sh
	$(WITH_PING) $(DENO) test $(TEST_FLAGS) $(UNIT_PATHS)

e2e: native $(DENO)
	tests/e2e/guest/build.sh
	$(WITH_PING) $(DENO) test $(TEST_FLAGS) tests/e2e/

bench: native $(DENO)
	tests/e2e/guest/build.sh
	bench/fetch_reference_passt.sh || echo "bench: Debian 13's passt could not be fetched; its row says n/a"
	$(WITH_PING) $(DENO) run $(TEST_FLAGS) bench/main.ts
	$(DENO) run $(TEST_FLAGS) bench/testpmd_udp.ts

# UDP packet rate with DPDK testpmd as the frontend (needs root, dpdk-dev, socat).
bench-udp: native $(DENO)
	bench/fetch_reference_passt.sh || echo "bench: Debian 13's passt could not be fetched; its row says n/a"
	$(DENO) run $(TEST_FLAGS) bench/testpmd_udp.ts

# deno compile downloads the `denort` runtime unless DENORT_BIN points at one.
compile: native $(DENO)
	mkdir -p dist
	$(DENO) compile --no-prompt -q -P=daemon --v8-flags=--expose-gc,--invocation-count-for-turbofan=300 --include $(HELPER) -o dist/tpasst main.ts

demo: native $(DENO)
	tests/e2e/guest/build.sh
	$(WITH_PING) $(DENO) run $(TEST_FLAGS) tests/e2e/demo.ts $(DEMO_ARGS)

clean:
	rm -rf native/*.so dist tests/e2e/.cache bench/results
