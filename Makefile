# switchyard build. `make`, `make check`, `make SANITIZE=address,undefined check`,
# `make WERROR=1`, `make V=1` for full commands, `make deps` installs packages.

CC       ?= cc
PKGS     := libevent libevent_pthreads libssl libcrypto libconfig libnghttp2
CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
            -Wno-unused-parameter
CPPFLAGS += -Iinclude -D_GNU_SOURCE $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -pthread
STD      := -std=c11

ifeq ($(WERROR),1)
WARN += -Werror
endif

ifneq ($(SANITIZE),)
FLAVOR   := san
CFLAGS   += -O1 -fno-omit-frame-pointer -fsanitize=$(SANITIZE) -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=$(SANITIZE)
else
FLAVOR   := default
endif

BUILD    := build/$(FLAVOR)
ifeq ($(FLAVOR),default)
BIN      := switchyard
else
BIN      := $(BUILD)/switchyard
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRC  := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJ  := $(LIB_SRC:src/%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/main.o
UNIT_SRC := $(wildcard tests/unit/check_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
PYTHON   := /usr/bin/python3

.PHONY: all check unit e2e clean deps print-deps format format-check bench install fuzz
.PHONY: uninstall doc-check install-check

all: $(BIN)

$(BIN): $(MAIN_OBJ) $(LIB_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: src/%.c $(wildcard include/*.h) | $(BUILD)
	@echo "  CC      $<"
	$(Q)$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) $(WARN) -MMD -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJ) | $(BUILD)/tests
	@echo "  CC      $<"
	$(Q)$(CC) $(STD) $(CPPFLAGS) $(CHECK_CFLAGS) $(CFLAGS) $(WARN) -Wno-missing-prototypes \
		$(LDFLAGS) -o $@ $< $(LIB_OBJ) $(CHECK_LIBS) $(LDLIBS)

$(BUILD) $(BUILD)/tests:
	$(Q)mkdir -p $@

# Unit suites (Check) then the end-to-end runner against the real binary; the
# man pages (every config key documented, mandoc clean) and `make install`.
check: unit e2e doc-check install-check

unit: $(UNIT_BIN)
	@fail=0; for t in $(UNIT_BIN); do \
		echo "== $$t"; CK_FORK=yes ./$$t || fail=1; done; exit $$fail

e2e: $(BIN)
	$(PYTHON) tests/e2e/run.py --binary ./$(BIN)

# Every key of src/config.c's key tables and of etc/switchyard.conf has its entry
# in switchyard.conf.5 (and no entry names an unknown key); both pages lint clean.
doc-check:
	$(PYTHON) tests/doc/check_keys.py
	@out=$$(mandoc -T lint man/switchyard.8 man/switchyard.conf.5 2>&1); rc=$$?; \
	if [ -n "$$out" ] || [ $$rc -ne 0 ]; then echo "$$out"; echo "mandoc -T lint: not clean"; exit 1; fi; \
	echo "mandoc -T lint: man/switchyard.8 man/switchyard.conf.5 clean"

# make install/uninstall into temporary DESTDIRs: the exact file list, an edited
# config kept, nothing left after uninstall; systemd-analyze verify on the unit.
install-check: $(BIN)
	MAKE="$(MAKE)" tests/doc/install_check.sh

bench: $(BIN)
	$(MAKE) -C tests/bench run SWITCHYARD=$(CURDIR)/$(BIN)

# The image of docker/Dockerfile, built with buildah and run with `buildah run` (no
# Docker engine; as root), checked from the host, with the compose and Kubernetes
# examples: tests/docker/run.py prints a PASS/FAIL line per check. The base,
# debian:bookworm-slim, is made once with debootstrap and cached in DOCKER_CACHE
# (outside the tree), reused when present.
DOCKER_CACHE ?= /var/cache/switchyard-ci
.PHONY: docker-test
docker-test:
	$(PYTHON) tests/docker/run.py --cache $(DOCKER_CACHE)

# Installs every build and test dependency (idempotent; needs root).
DEPS := build-essential pkg-config libevent-dev libssl-dev libhttp-parser-dev check \
        libconfig-dev python3 python3-websockets curl openssl clang-format chromium \
        clang libclang-rt-14-dev dnsmasq-base python3-prometheus-client
# make docker-test: build and run images without a Docker engine, read the YAML examples
DEPS += buildah podman debootstrap python3-yaml
# make doc-check: man page lint
DEPS += mandoc
# HTTP/2 at the front (src/h2.c on nghttp2) and its tests: curl --http2, nghttp,
# h2load (nghttp2-client) and python3-h2 for the conformance and attack cases
DEPS += libnghttp2-dev nghttp2-client python3-h2
deps:
	@missing=$$(for p in $(DEPS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else echo "all dependencies present"; fi

print-deps:
	@echo $(DEPS)

# libFuzzer drivers (clang + libclang-rt, in DEPS). `make fuzz FUZZ_SECONDS=60` runs each
# for that long from its seed corpus tests/fuzz/corpus/<driver> (made by
# tests/fuzz/make_corpus.py) and dictionary tests/fuzz/<driver>.dict if any, the
# seeds copied into build/fuzz/corpus/<driver>, which keeps what a run finds
# (rm -rf it to start over); crash inputs land in build/fuzz/.
FUZZ_SECONDS ?= 30
FUZZERS    := fuzz_http fuzz_ws fuzz_proxyproto fuzz_response fuzz_config fuzz_h2
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
              -Iinclude -D_GNU_SOURCE
# fuzz_http: room above the default limits (header_bytes 16384) to cross them
FUZZ_MAXLEN_fuzz_http := 20480
FUZZ_MAXLEN_fuzz_ws   := 4096
# fuzz_proxyproto: past PROXYPROTO_V2_MAX (2048) to cross it
FUZZ_MAXLEN_fuzz_proxyproto := 4096
# fuzz_response: as fuzz_http; fuzz_config: room for etc/switchyard.conf (9.8 KB) and more
FUZZ_MAXLEN_fuzz_response := 20480
FUZZ_MAXLEN_fuzz_config := 16384
# fuzz_h2: a few frames' worth of a connection
FUZZ_MAXLEN_fuzz_h2 := 8192

build/fuzz/fuzz_http: tests/fuzz/fuzz_http.c src/http.c src/http_hdr.c include/http.h include/http_hdr.h
	@mkdir -p build/fuzz
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) $(shell pkg-config --cflags --libs libevent) -lhttp_parser

build/fuzz/fuzz_ws: tests/fuzz/fuzz_ws.c src/ws.c include/ws.h
	@mkdir -p build/fuzz
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^)

build/fuzz/fuzz_proxyproto: tests/fuzz/fuzz_proxyproto.c src/proxyproto.c include/proxyproto.h
	@mkdir -p build/fuzz
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^)

# drivers compile the sources they test with the fuzzer's instrumentation (the
# library objects of $(BUILD) have none)
build/fuzz/fuzz_response: tests/fuzz/fuzz_response.c src/http.c src/http_hdr.c src/upgrade.c \
		include/http.h include/http_hdr.h include/upgrade.h include/config.h tests/fuzz/fuzz_check.h
	@mkdir -p build/fuzz
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) $(shell pkg-config --cflags --libs libevent libcrypto) -lhttp_parser

# tls.c (certificate checks) makes its connections through conn.c
build/fuzz/fuzz_config: tests/fuzz/fuzz_config.c src/config.c src/tls.c src/conn.c include/config.h \
		include/tls.h include/conn.h tests/fuzz/fuzz_check.h
	@mkdir -p build/fuzz
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) \
		$(shell pkg-config --cflags --libs libconfig libevent libssl libcrypto)

# the HTTP/2 front end on a real event loop: h2.c with the conn, http and upgrade code it uses
build/fuzz/fuzz_h2: tests/fuzz/fuzz_h2.c src/h2.c src/conn.c src/http.c src/http_hdr.c src/upgrade.c \
		src/log.c include/h2.h include/conn.h include/http.h include/http_hdr.h include/upgrade.h \
		tests/fuzz/fuzz_check.h
	@mkdir -p build/fuzz
	clang $(FUZZ_FLAGS) -o $@ $(filter %.c,$^) \
		$(shell pkg-config --cflags --libs libevent libssl libcrypto libnghttp2) -lhttp_parser

fuzz: $(FUZZERS:%=build/fuzz/%)
	@fail=0; $(foreach f,$(FUZZERS), \
		mkdir -p build/fuzz/corpus/$(f) && cp tests/fuzz/corpus/$(f)/* build/fuzz/corpus/$(f)/ && \
		echo "== $(f) ($(FUZZ_SECONDS) s)" && \
		build/fuzz/$(f) -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAXLEN_$(f)) -timeout=30 \
			$(if $(wildcard tests/fuzz/$(f).dict),-dict=tests/fuzz/$(f).dict) -print_final_stats=1 \
			-artifact_prefix=build/fuzz/$(f)- build/fuzz/corpus/$(f) \
			|| fail=1;) exit $$fail

# The proxy under valgrind memcheck on a subset of the e2e suite (http, terminate, h2,
# faults, logs, reload; ~5 min on 2 cores): tests/soak/check_valgrind.sh, which
# fails on a memcheck error or definite leak in any proxy process (exit 89, log
# scan). `make soak SOAK_SECONDS=600`: workers = 2, tunnels, HTTP, terminated
# WebSockets, backend kills and reloads, then fds, RSS and logs checked
# (tests/soak/soak.py, doc/soak.md); not part of `make check`.
SOAK_SECONDS ?= 600
.PHONY: check-valgrind soak
check-valgrind: $(BIN)
	tests/soak/check_valgrind.sh $(BIN) -j 2

soak: $(BIN)
	$(PYTHON) tests/soak/soak.py --binary ./$(BIN) --seconds $(SOAK_SECONDS)

# `make install` (PREFIX=/usr/local; DESTDIR for staging, e.g. DESTDIR=/out PREFIX=/usr):
# the binary, both man pages, the systemd unit (its paths rewritten to SBINDIR and
# SYSCONFDIR) and the example config, which never replaces an existing one: that
# stays, and the new example goes next to it as switchyard.conf.example.
# `make uninstall` removes what install put there, but keeps a config that differs
# from etc/switchyard.conf (yours) unless PURGE=1.
PREFIX         ?= /usr/local
DESTDIR        ?=
SBINDIR        ?= $(PREFIX)/sbin
MANDIR         ?= $(PREFIX)/share/man
SYSCONFDIR     ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
CONFDIR         = $(SYSCONFDIR)/switchyard
install: $(BIN)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(CONFDIR) $(DESTDIR)$(SYSTEMDUNITDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/switchyard
	install -m 0644 man/switchyard.8 $(DESTDIR)$(MANDIR)/man8/switchyard.8
	install -m 0644 man/switchyard.conf.5 $(DESTDIR)$(MANDIR)/man5/switchyard.conf.5
	sed -e 's,/usr/local/sbin/switchyard,$(SBINDIR)/switchyard,g' \
		-e 's,/usr/local/etc/switchyard/,$(CONFDIR)/,g' etc/switchyard.service \
		> $(DESTDIR)$(SYSTEMDUNITDIR)/switchyard.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/switchyard.service
	@c=$(DESTDIR)$(CONFDIR)/switchyard.conf; \
	if [ ! -e $$c ]; then echo "install -m 0644 etc/switchyard.conf $$c"; \
		install -m 0644 etc/switchyard.conf $$c; \
	elif cmp -s etc/switchyard.conf $$c; then echo "$$c: up to date"; \
	else install -m 0644 etc/switchyard.conf $$c.example; \
		echo "$$c exists and was kept; the new example is $$c.example"; fi

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/switchyard $(DESTDIR)$(MANDIR)/man8/switchyard.8 \
		$(DESTDIR)$(MANDIR)/man5/switchyard.conf.5 \
		$(DESTDIR)$(SYSTEMDUNITDIR)/switchyard.service \
		$(DESTDIR)$(CONFDIR)/switchyard.conf.example
	@c=$(DESTDIR)$(CONFDIR)/switchyard.conf; \
	if [ -e $$c ] && [ "$(PURGE)" != 1 ] && ! cmp -s etc/switchyard.conf $$c; then \
		echo "$$c differs from etc/switchyard.conf and was kept (PURGE=1 removes it)"; \
	else rm -f $$c; rmdir $(DESTDIR)$(CONFDIR) 2>/dev/null || true; fi

format:
	clang-format -i src/*.c include/*.h tests/unit/*.c

format-check:
	clang-format --dry-run --Werror src/*.c include/*.h tests/unit/*.c

clean:
	rm -rf build switchyard

-include $(wildcard $(BUILD)/*.d)
