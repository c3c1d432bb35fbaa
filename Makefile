# meshcast — see README.md. `make run` and `make test` are the quick start.
SHELL := /bin/bash
GO ?= go
BIN := bin
NPM_DIR := clientjs
STATICCHECK_VERSION ?= v0.8.2
# Debian's chromium, installed by `make test` when missing (as root).
CHROMIUM_BIN ?= /usr/bin/chromium
export CHROMIUM_BIN

.PHONY: all build run run-pg cluster bench-compare bench-transports bench-scale soak test test-go test-js test-browser deps-js deps-browser deps-pg bench lint fuzz chaos clean clientjs-pack

all: build

# What meshcast --version and /version report: git describe of this
# checkout (its tag, else its commit, -dirty with changes), unless given.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)

build:
	$(GO) build -ldflags "$(if $(VERSION),-X main.version=$(VERSION))" -o $(BIN)/meshcast ./cmd/meshcast
	$(GO) build -o $(BIN)/meshbench ./cmd/meshbench

# A single node with embedded defaults: demo page at http://localhost:4000.
# ARGS go to the node, as MESHCAST_<FLAG> variables do:
# make run ARGS="--listen 127.0.0.1:4100", make run MESHCAST_LISTEN=127.0.0.1:4100.
run: build
	./$(BIN)/meshcast $(ARGS)

# A node streaming the changes of a throwaway local Postgres (a todos table
# in the supabase_realtime publication); the demo page shows it live.
# LISTEN (127.0.0.1:4000) and PGPORT (54329) move it: make run-pg LISTEN=127.0.0.1:4100 PGPORT=54330.
run-pg: build deps-pg
	./deploy/local/run-pg.sh $(ARGS)

# Three local nodes n1/n2/n3 (iad/fra/sin) on 127.0.0.1:4000-4002, gossip 7946/7956/7966; Ctrl-C stops them.
# CLUSTER_PORT, CLUSTER_GOSSIP_PORT, CLUSTER_NAMES, CLUSTER_REGIONS change them (deploy/local/cluster.sh):
# make cluster CLUSTER_PORT=5000 CLUSTER_GOSSIP_PORT=8946 CLUSTER_NAMES="a b" CLUSTER_REGIONS="iad fra".
cluster: build
	./deploy/local/cluster.sh $(ARGS)

test: build deps-pg test-go test-fuzz test-js test-browser

# PostgreSQL 15's server binaries, for the tests' throwaway databases
# (wal/pgtest starts them; as root it runs them as the postgres user).
PG_BINDIR ?= /usr/lib/postgresql/15/bin
deps-pg:
	@if [ ! -x $(PG_BINDIR)/initdb ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian postgresql-15"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; \
		else \
			echo "PostgreSQL 15 missing and not root: install Debian's postgresql-15 to run the Postgres tests"; \
		fi; \
	fi

# Packages that hold concurrency run with -race; pure codecs without it
# (race instrumentation only slows them down).
RACE_PKGS := ./edge/... ./mesh/... ./wal/... ./cmd/...
test-go: deps-pg
	$(GO) vet ./...
	$(GO) test -race -count=1 $(RACE_PKGS)
	$(GO) test -count=1 ./wire/... ./bench/...

deps-js:
	@if [ ! -f $(NPM_DIR)/node_modules/.package-lock.json ] || [ $(NPM_DIR)/package-lock.json -nt $(NPM_DIR)/node_modules/.package-lock.json ]; then \
		echo "installing npm packages in $(NPM_DIR)"; \
		cd $(NPM_DIR) && npm ci --no-audit --no-fund; \
	fi

# clientjs as an npm package: bin/meshcast-client-<version>.tgz, which an
# app installs with npm install /path/to/bin/meshcast-client-<version>.tgz.
clientjs-pack:
	@mkdir -p $(BIN)
	cd $(NPM_DIR) && npm pack --pack-destination $(CURDIR)/$(BIN)

deps-browser:
	@if ! command -v $(CHROMIUM_BIN) >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian chromium"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "chromium missing and not root: install Debian's chromium to run the browser test"; \
		fi; \
	fi

test-js: build deps-js deps-pg
	cd $(NPM_DIR) && MESHCAST_BIN=$(CURDIR)/$(BIN)/meshcast npm test

test-browser: build deps-js deps-browser deps-pg
	cd $(NPM_DIR) && MESHCAST_BIN=$(CURDIR)/$(BIN)/meshcast npm run test:browser

# Go benchmarks (codecs, fan-out, router, mesh strategies), meshbench
# against a local node (idle RSS, throughput, latency), and latency by
# region on an emulated WAN (report in bin/regions.{txt,json,html}).
bench: build
	$(GO) test -run='^$$' -bench=. -benchmem ./wire/... ./edge/... ./mesh/...
	TARGETS=meshcast ROUNDS=1 ./bench/compare.sh
	ONLY=rooms ./bench/regions.sh    # latency by region and the strategies: bin/regions.html

# meshcast and Centrifugo side by side, as in README's Performance section.
CENTRIFUGO_VERSION ?= v6.9.1
bench-compare: build
	$(GO) install github.com/centrifugal/centrifugo/v6@$(CENTRIFUGO_VERSION)
	ROUNDS=3 ./bench/compare.sh

# WebSocket vs WebTransport (and datagrams) on one node, as in README's Performance section.
bench-transports: build
	ROUNDS=3 ./bench/transports.sh

# Connections held by a local cluster from several meshbench processes, then a
# broadcast per second to every channel (README, Performance: 100 000 connections).
bench-scale: build
	./bench/scale.sh

# The chaos test for minutes (a 25 s run of it is part of test-go): kill -9,
# partitions in network namespaces (root), Postgres restarts, under
# broadcast + presence + postgres_changes; the nodes built with -race and
# run with the default failure detection. See README, Development.
CHAOS_DURATION ?= 3m
CHAOS_REQUIRE_NETNS ?= $(shell [ "$$(id -u)" = 0 ] && echo 1)
chaos: deps-pg
	CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_REQUIRE_NETNS=$(CHAOS_REQUIRE_NETNS) MESHCAST_TEST_NODE_RACE=1 \
	$(GO) test -race -count=1 -v -run '^TestChaos$$' -timeout 30m ./cmd/meshcast

# A bounded soak, not part of make test: 3 nodes + Postgres under mixed load
# for SOAK_DURATION; fails if goroutines or RSS grow beyond its bounds.
SOAK_DURATION ?= 10m
soak: build deps-pg
	$(BIN)/meshbench soak -duration $(SOAK_DURATION)

# Every fuzz target, as package:function. `make fuzz-check` (run by fuzz and
# test-fuzz) fails when a Fuzz function of the tree is missing here or has
# no seed corpus in its package's testdata/fuzz/<name>/.
FUZZ_TARGETS := \
	./wire/phx:FuzzDecodeText ./wire/phx:FuzzDecodeBinary ./wire/phx:FuzzAppendString \
	./wire/phx:FuzzDecodeJoin ./wire/phx:FuzzDecodePush ./wire/phx:FuzzAppendPresenceMeta \
	./wire/phx:FuzzScanV2 ./wire/phx:FuzzDecodeUserBroadcast \
	./wire/meshproto:FuzzDecode ./wire/meshproto:FuzzReadFrame \
	./wal:FuzzParseMessage ./wal:FuzzPgoutputStream ./wal:FuzzAppendValue ./wal:FuzzParseFilter ./wal:FuzzDecodeChange ./wal:FuzzSubRegister ./wal:FuzzJSONB ./wal:FuzzParsePos \
	./wal/dbcast:FuzzDecode \
	./edge:FuzzWTFrameReader ./edge:FuzzWSReader ./edge:FuzzDecodeDatagram ./edge:FuzzVerifyToken ./edge:FuzzJoinConfig \
	./edge:FuzzPresenceTrack ./edge:FuzzRESTBroadcast ./edge/history:FuzzParseVector ./edge/history:FuzzMetaPos \
	./mesh:FuzzAssembler ./mesh:FuzzDecodeMeta ./mesh:FuzzHello \
	./mesh/gossipnet:FuzzFirstMessage ./mesh/gossipnet:FuzzPacket
FUZZTIME ?= 30s
FUZZTIME_SHORT ?= 2s
.PHONY: fuzz-check test-fuzz fuzz-corpus

fuzz-check:
	@found=$$(grep -rEo --include='*_test.go' --exclude-dir=node_modules --exclude-dir=.git '^func Fuzz[A-Za-z0-9_]+' . \
		| sed -E 's#^(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]+)$$#\1:\2#' | sort -u); \
	listed=$$(printf '%s\n' $(FUZZ_TARGETS) | sort -u); \
	if [ "$$found" != "$$listed" ]; then \
		echo "FUZZ_TARGETS in the Makefile and the Fuzz functions of the tree differ (< tree, > Makefile):"; \
		diff <(echo "$$found") <(echo "$$listed"); exit 1; \
	fi; \
	for t in $(FUZZ_TARGETS); do \
		d=$${t%%:*}/testdata/fuzz/$${t##*:}; \
		[ -n "$$(ls -A $$d 2>/dev/null)" ] || { echo "$$t has no seed corpus in $$d"; exit 1; }; \
	done

# Each target for FUZZ_TIME (make fuzz FUZZTIME=5m for a long run). A
# crasher lands in the package's testdata/fuzz/<name>/: commit it with the
# fix, and plain `go test` keeps it as a regression test.
fuzz: fuzz-check
	@for t in $(FUZZ_TARGETS); do \
		echo "== $$t for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$${t##*:}\$$" -fuzztime=$(FUZZTIME) $${t%%:*} || exit 1; \
	done

# Part of `make test`: every target for FUZZTIME_SHORT. Each package's
# instrumented test binary is built once and run per target (go test -fuzz
# would link it again for every target), in the package's directory so
# that it finds testdata/, with go test's own fuzz cache.
FUZZ_PKGS = $(sort $(foreach t,$(FUZZ_TARGETS),$(firstword $(subst :, ,$(t)))))
test-fuzz: fuzz-check
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cache=$$($(GO) env GOCACHE)/fuzz && \
	for pkg in $(FUZZ_PKGS); do \
		$(GO) test -c -fuzz=. -o "$$tmp/$$(echo $$pkg | tr / _).test" $$pkg || exit 1; \
	done && \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; ip=$$($(GO) list $$pkg); \
		bin="$$tmp/$$(echo $$pkg | tr / _).test"; seeds=$$(ls $$pkg/testdata/fuzz/$$name | wc -l); \
		if out=$$(cd $$pkg && "$$bin" -test.run='^$$' -test.fuzz="^$$name\$$" \
			-test.fuzztime=$(FUZZTIME_SHORT) -test.fuzzcachedir="$$cache/$$ip" 2>&1); then \
			echo "ok   fuzz $$t $(FUZZTIME_SHORT)"; \
		elif [ "$$(ls $$pkg/testdata/fuzz/$$name | wc -l)" = "$$seeds" ] && echo "$$out" | grep -qx '    context deadline exceeded' \
			&& (cd $$pkg && "$$bin" -test.run="^$$name\$$" >/dev/null 2>&1); then \
			echo "ok   fuzz $$t $(FUZZTIME_SHORT) (Go's fuzz coordinator missed its own -fuzztime deadline, a known race: no crasher written, corpus replayed)"; \
		else echo "$$out"; echo "FAIL fuzz $$t (a crasher is in $$pkg/testdata/fuzz/$$name/)"; exit 1; fi; \
	done

# Rewrites the seed corpora from real inputs (wal's needs Postgres).
fuzz-corpus: deps-pg
	MESHCAST_WRITE_CORPUS=1 $(GO) test -count=1 -run='^TestWriteCorpus' ./wire/... ./edge ./mesh ./wal

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

clean:
	rm -rf $(BIN)
