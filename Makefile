# swarmvlan build, test and run targets.
#
#   make run    start a local Consul agent (bin/consul, built on first use) and
#               the reconciler with --role all against the local Docker Engine
#   make test   build Consul if needed, prepare Docker (swarm mode), fetch and
#               build the matrix's Engines and install qemu and the VM kernel
#               (all cached), run every test, multi-host, VM and Engine matrix
#               included, and a short fuzz pass; print each package's wall
#               time and the Engine matrix at the end
#   make image  build the reconciler image (FROM scratch, tagged with the
#               version) and save it as bin/swarmvlan-reconciler-VERSION.tar
#               for `docker load -i` on hosts without a registry
#   make demo   bring up three lab hosts with a reconciler each, apply
#               examples/demo/ and show the result; make demo-down removes it
#   make chaos  a seeded run of random faults over a lab cluster of five
#               hosts with the invariants checked (SEED=N DURATION=10m)

SHELL      := /bin/bash
GO         ?= go
PREFIX     ?= swarmvlan/
CONSUL     := $(shell command -v consul 2>/dev/null || echo $(CURDIR)/bin/consul)
CONSUL_VERSION := v1.20.6
RUN_DIR    ?= $(CURDIR)/.run
FUZZTIME   ?= 200000x
TESTFLAGS  ?=
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT     ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE      ?= swarmvlan/reconciler
LDFLAGS    := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

export SWARMVLAN_CONSUL := $(CONSUL)

.PHONY: all build image test unit lint fuzz consul run run-consul stop bench bench-latency bench-scale docker engines clean demo demo-down chaos

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/reconciler ./cmd/reconciler

# image builds deploy/Dockerfile on the local engine (or DOCKER_HOST's).
image: docker
	@GO=$(GO) VERSION=$(VERSION) COMMIT=$(COMMIT) IMAGE=$(IMAGE) deploy/build-image.sh

# Consul is built from the Go module proxy by a separate tools module, so the
# product's go.mod does not carry Consul's dependency tree.
consul: $(CONSUL)

$(CURDIR)/bin/consul: tools/consul/go.mod tools/consul/go.sum
	cd tools/consul && GONOSUMDB=github.com/hashicorp/consul-awsauth \
		$(GO) build -o $(CURDIR)/bin/consul github.com/hashicorp/consul
	@$(CURDIR)/bin/consul version | head -1

# docker makes sure the local Engine runs and is a swarm manager.
docker:
	@scripts/ensure-docker.sh

# engines fetches Debian's Engines 26 and 28 and builds Engine 29 (from the
# tools module tools/dockerd) into /var/cache/swarmvlan/engines, for the
# Engine matrix (e2e/engines); with the cache warm it fetches and builds
# nothing. An Engine it cannot get is named in its output and fails in the
# matrix as not run.
engines:
	@GO=$(GO) scripts/ensure-engines.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -short -count=1 ./...

# Packages run one at a time: the integration tests share the local Engine's
# swarm and the root network namespace. scripts/test-times.sh runs the test
# pass and then the fuzz pass, keeps their output in $(RUN_DIR)/test-times/
# and prints, at the end, each package's minutes and each pass's wall time,
# also when a pass fails (make test then fails with it); the README's "Test
# time budget" says what each may take.
# The Engine matrix's table (per Engine, each test's outcome and time) is
# printed after the summary.
# The figures the tests measure (FIGURE lines, lab.Figure) are printed
# after it too: a passing package prints nothing of its own.
test: export SWARMVLAN_ENGINE_REPORT := $(RUN_DIR)/test-times/engine-matrix.txt
test: export SWARMVLAN_FIGURES := $(RUN_DIR)/test-times/figures.txt
test: consul docker engines lint
	@scripts/ensure-vm.sh
	@scripts/ensure-chromium.sh
	@rm -f $(SWARMVLAN_ENGINE_REPORT) $(SWARMVLAN_FIGURES)
	@status=0; scripts/test-times.sh $(RUN_DIR)/test-times \
		'test=$(GO) test -count=1 -p 1 -timeout 60m $(TESTFLAGS) ./...' \
		'fuzz=$(MAKE) --no-print-directory fuzz' || status=$$?; \
	if [ -f $(SWARMVLAN_ENGINE_REPORT) ]; then echo "== Engine matrix (e2e/engines) =="; cat $(SWARMVLAN_ENGINE_REPORT); fi; \
	if [ -f $(SWARMVLAN_FIGURES) ]; then echo "== Figures =="; cat $(SWARMVLAN_FIGURES); fi; \
	exit $$status

fuzz:
	$(GO) test ./spec -run '^$$' -fuzz '^FuzzDecodeAll$$' -fuzztime $(FUZZTIME)

bench: consul docker
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./...

# BENCH_FLAGS are added to the bench targets' go test (for example
# BENCH_FLAGS='-cpuprofile cpu.pprof' on bench-scale); with
# SWARMVLAN_PPROF_DIR=DIR set, the daemons they start serve --pprof and
# their CPU and heap profiles of each phase are written to DIR.
BENCH_FLAGS ?=

# bench-latency prints, in one run, the watch's wake-up and storm figures
# and the leader's KV put -> Docker and scale request -> Docker latencies,
# each beside its baseline, over 100 changes of each path (about 3
# minutes; root, the local Engine; make test runs the same with 40).
bench-latency: consul docker
	@set -o pipefail; SWARMVLAN_LATENCY_CHANGES=100 $(GO) test $(BENCH_FLAGS) -count=1 -p 1 -v -timeout 20m -run '^(TestWatchPacingFigures|TestLeaderLatencyFigures)$$' \
		./state ./cmd/reconciler | grep -E 'FIGURE|^(ok|FAIL|--- )'

# bench-scale measures the leader at 10,000 services (replicas 0) and 200
# simulated nodes: creating them, RSS, a no-op resync, idle Consul
# requests, a new leader's cold start (SWARMVLAN_SCALE_SERVICES changes
# the count). Creating 10,000 Swarm services takes long on Engine 20.10.
# Go cuts a benchmark's log after ten lines, so the figures are printed
# from the figures file ($(RUN_DIR)/bench-scale-figures.txt) at the end.
bench-scale: export SWARMVLAN_FIGURES := $(RUN_DIR)/bench-scale-figures.txt
bench-scale: consul docker
	@mkdir -p $(RUN_DIR); rm -f $(SWARMVLAN_FIGURES); set -o pipefail; \
	$(GO) test $(BENCH_FLAGS) -count=1 -p 1 -timeout 4h -run '^$$' -bench '^BenchmarkLeaderAtScale$$' -benchtime 1x \
		./cmd/reconciler | grep -E '^(ok|FAIL|--- )|services in'; rc=$$?; \
	if [ -f $(SWARMVLAN_FIGURES) ]; then echo "== Figures =="; cat $(SWARMVLAN_FIGURES); fi; exit $$rc

# chaos runs e2e/chaos's nemesis for DURATION with SEED (root, the local
# Engine): the schedule is printed as it runs, a violation prints the seed
# and the schedule so far and fails; the figures (faults by kind,
# violations, the longest convergence after healing) come at the end. The
# output is kept in $(RUN_DIR)/chaos-SEED.log.
SEED     ?= 18
DURATION ?= 10m
chaos: consul docker
	@mkdir -p $(RUN_DIR)
	@set -o pipefail; SWARMVLAN_CHAOS_SEED=$(SEED) SWARMVLAN_CHAOS_DURATION=$(DURATION) \
		$(GO) test -count=1 -p 1 -v -timeout 4h -run '^TestChaos$$' ./e2e/chaos/ | tee $(RUN_DIR)/chaos-$(SEED).log

# run starts a dev Consul agent (unless one answers already) and the
# reconciler in the foreground with every role. Ctrl-C stops both.
run: consul docker build
	@mkdir -p $(RUN_DIR)
	@scripts/run-local.sh "$(CONSUL)" "$(RUN_DIR)" "$(PREFIX)"

# demo brings up three lab hosts (network namespaces, each with its own
# dockerd, Consul server and reconciler) that stay up after make returns;
# demo-down removes them. Both need root.
demo: consul docker
	$(GO) run ./lab/demo up

demo-down:
	$(GO) run ./lab/demo down

clean:
	rm -rf bin .run
