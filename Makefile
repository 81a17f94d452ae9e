# presenced. `make help` lists the targets; each is documented by its `## ` comment.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO ?= go
# The Debian interpreter: python3-websockets installs there, whatever
# python3 comes first on PATH (pyenv, a venv).
PYTHON := /usr/bin/python3
# apt-get needs root: sudo when not root and sudo exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo || true)

TEST_TIMEOUT ?= 10m
TEST_FUZZTIME ?= 10s
FUZZTIME ?= 60s
BENCH ?= .
BENCHTIME ?= 1s
PKG ?= ./...
ARGS ?=
CLUSTER_REDIS_PORT ?= 6390

CACHE := $(CURDIR)/.cache
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(CACHE)/tools/staticcheck-$(STATICCHECK_VERSION)/staticcheck
# Centrifugo, the peer that bench-compare runs beside presenced: built from
# the module proxy at a pinned version into .cache (never committed).
CENTRIFUGO_VERSION := v6.9.1
CENTRIFUGO := $(CACHE)/tools/centrifugo-$(CENTRIFUGO_VERSION)/centrifugo
# promtool (module version v0.316.0 is Prometheus 3.16.0), for
# promtool-check, which deploy-check runs once it is installed. Without it
# deploy-check parses the same rules with Prometheus's packages (about
# 2 minutes to compile the first time, seconds once cached; promtool takes
# many minutes). deploy/check/go.mod needs Go 1.26.7 (Prometheus's floor):
# an offline host with an older Go cannot run deploy-check (make deps says
# so).
PROMTOOL_VERSION := v0.316.0
PROMTOOL := $(CACHE)/tools/promtool-$(PROMTOOL_VERSION)/promtool
# The JavaScript SDK's packages (clients/js/node_modules) come from npm ci
# on the committed lockfile; the stamp, inside node_modules so that npm ci
# removes it, is newer than the lockfile once they are installed.
JS := clients/js
JS_STAMP := $(JS)/node_modules/.installed

.PHONY: help build run cluster test js-test e2e race fuzz bench bench-compare lint ci deps deps-deploy centrifugo deploy-check promtool-check

help: ## List the targets
	@echo "Usage: make TARGET [VAR=value]"
	@echo
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z0-9-]*:.*## / { printf "  %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo
	@echo "Variables: FUZZTIME=$(FUZZTIME) TEST_FUZZTIME=$(TEST_FUZZTIME) TEST_TIMEOUT=$(TEST_TIMEOUT) BENCH=$(BENCH) PKG=$(PKG) ARGS=$(ARGS)"

build: ## Build bin/presenced and bin/presence-load
	$(GO) build -o bin/presenced ./cmd/presenced
	$(GO) build -o bin/presence-load ./cmd/presence-load

run: ## Run one node on 127.0.0.1:8080 (ws://127.0.0.1:8080/ws, demo page http://127.0.0.1:8080/demo, admin on 127.0.0.1:9090); extra flags in ARGS
	$(GO) run ./cmd/presenced -addr 127.0.0.1:8080 -insecure -demo $(ARGS)

# make cluster: one redis-server (no persistence, files in .cache/cluster)
# and three nodes sharing it. Ctrl-C reaches the nodes (the foreground
# process group): they drain and leave; redis-server runs in a session of
# its own so that it outlives them, and the EXIT trap stops it last. One
# process exiting on its own stops the others.
cluster: build ## Three nodes on 127.0.0.1:8080-8082 (admin 9090-9092) sharing a local redis-server on CLUSTER_REDIS_PORT; Ctrl-C stops all; extra flags in ARGS
	@command -v redis-server >/dev/null 2>&1 || { echo "cluster: redis-server not found: run make deps"; exit 1; }
	@if redis-cli -p $(CLUSTER_REDIS_PORT) ping >/dev/null 2>&1; then \
		echo "cluster: port $(CLUSTER_REDIS_PORT) already answers PING: stop that Redis or set CLUSTER_REDIS_PORT"; exit 1; \
	fi
	@dir=$(CACHE)/cluster; mkdir -p $$dir; redis=; nodes=(); \
	trap 'trap - EXIT; kill $${nodes[@]} 2>/dev/null || true; wait $${nodes[@]} 2>/dev/null || true; \
		[ -z "$$redis" ] || { kill $$redis 2>/dev/null || true; wait $$redis 2>/dev/null || true; }' EXIT; \
	trap 'exit 130' INT TERM; \
	setsid redis-server --port $(CLUSTER_REDIS_PORT) --bind 127.0.0.1 --save '' --appendonly no \
		--dir $$dir --logfile $$dir/redis.log & redis=$$!; \
	for i in $$(seq 50); do redis-cli -p $(CLUSTER_REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.1; done; \
	redis-cli -p $(CLUSTER_REDIS_PORT) ping >/dev/null 2>&1 || { echo "cluster: redis-server did not start: see $$dir/redis.log"; exit 1; }; \
	for i in 0 1 2; do \
		bin/presenced -addr 127.0.0.1:808$$i -admin-addr 127.0.0.1:909$$i -node node$$i -insecure \
			-redis redis://127.0.0.1:$(CLUSTER_REDIS_PORT) $(ARGS) & nodes+=($$!); \
	done; \
	echo "cluster: redis on 127.0.0.1:$(CLUSTER_REDIS_PORT); nodes ws://127.0.0.1:8080/ws, :8081, :8082 (admin :9090-:9092); Ctrl-C stops all"; \
	wait -n

# The allocation guards (AllocsPerRun tests, named *Alloc*) run again
# without -race: the race detector's sync.Pool drops items at random.
test: deps ## The whole suite: installs missing deps, go vet, race tests, allocation guards, deploy-check, the JS SDK's tests, the browser tests, then TEST_FUZZTIME of each fuzz target
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run 'Alloc' ./coalesce ./internal/wire ./poller ./presence ./internal/server
	@$(MAKE) --no-print-directory deploy-check
	@$(MAKE) --no-print-directory js-test
	@$(MAKE) --no-print-directory e2e
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME)

# deploy/check is a module of its own (k8s.io/api, sigs.k8s.io/yaml,
# Prometheus's rule parser and moby/patternmatcher stay out of go.mod); its
# tests start the bin/presenced built here, and proxy_test.go sends
# WebSocket traffic through nginx and HAProxy with the shipped configs (the
# Go SDK through a replace of the root module: go.mod here is untouched).
# tools.sh runs sysctl -p (in a throwaway network namespace),
# systemd-analyze, nginx and haproxy; promtool.sh runs the pinned promtool
# once make promtool-check has built it, else Debian's (make deps-deploy
# installs it), which lacks Kubernetes discovery and so checks a copy of
# scrape.yml whose kubernetes_sd_configs block is a static_configs one. A
# validator missing after deps-deploy fails the target.
deploy-check: deps-deploy ## Validate every file of deploy/ (deploy/README.md, "Checks"): sysctl -p, systemd-analyze verify, nginx -t, haproxy -c, promtool, strict k8s decoding, WebSocket clients through nginx and HAProxy, the Dockerfile and its dockerignore, and that every metric and label value the alerts and dashboard use is exported
	$(GO) build -o bin/presenced ./cmd/presenced
	deploy/check/tools.sh $(CURDIR)/bin/presenced
	cd deploy/check && PRESENCED_BIN=$(CURDIR)/bin/presenced $(GO) test -count=1 -timeout 5m ./...
	@if [ -x $(PROMTOOL) ]; then deploy/check/promtool.sh $(PROMTOOL) pinned; \
	elif [ -x /usr/bin/promtool ]; then deploy/check/promtool.sh /usr/bin/promtool; \
	else echo "deploy-check: no promtool (make deps-deploy installs Debian's prometheus package; make promtool-check builds the pinned one): deploy/prometheus not checked: FAILED"; exit 1; fi

promtool-check: $(PROMTOOL) ## promtool check rules, test rules (alerts_test.yml) and check config (scrape.yml as shipped, Kubernetes discovery too) with the pinned promtool, installed into .cache/tools (many minutes the first time; not part of test, which uses Debian's promtool until this one is built)
	deploy/check/promtool.sh $(PROMTOOL) pinned

$(PROMTOOL):
	@echo "promtool-check: installing promtool $(PROMTOOL_VERSION) (many minutes)"
	@GOBIN=$(dir $@) $(GO) install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

# The JS tests start bin/presenced themselves (clients/js/test/presenced.js),
# each on free loopback ports.
js-test: deps ## The JS SDK's tests (node:test in clients/js/test) against a real bin/presenced
	$(GO) build -o bin/presenced ./cmd/presenced
	cd $(JS) && PRESENCED_BIN=$(CURDIR)/bin/presenced npm test
	cd $(JS) && npm run --silent size -- --max=6144

e2e: deps ## Browser tests: the demo page in headless Debian chromium (playwright-core, clients/js/e2e); screenshots in .cache/e2e/<test>/<step>.png
	$(GO) build -o bin/presenced ./cmd/presenced
	cd $(JS) && PRESENCED_BIN=$(CURDIR)/bin/presenced npm run test:e2e

race: deps ## Tests of PKG with the race detector
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKG)

# Fuzz targets are found with `go test -list`, so a new FuzzX is fuzzed
# without editing this file. -fuzz takes one package and one target a run.
# A run that fails only with "context deadline exceeded" and wrote no
# failing input is the Go 1.26 coordinator's race at the -fuzztime
# boundary (golang/go#75804): it is run once more; anything else fails.
fuzz: ## Fuzz every fuzz target of the module for FUZZTIME each
	@targets=$$($(GO) test -list '^Fuzz' ./... | awk '/^Fuzz/ { f[n++] = $$1; next } /^ok/ { for (i = 0; i < n; i++) print $$2, f[i]; n = 0 }'); \
	if [ -z "$$targets" ]; then echo "fuzz: no fuzz targets"; exit 0; fi; \
	log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	while read -r pkg name; do \
		for try in 1 2; do \
			echo "fuzz: $$name ($$pkg) for $(FUZZTIME)"; \
			if $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$pkg" 2>&1 | tee "$$log"; then break; fi; \
			if [ $$try = 1 ] && grep -q 'context deadline exceeded' "$$log" && ! grep -q 'Failing input written' "$$log"; then \
				echo "fuzz: $$name stopped on the Go fuzz coordinator's deadline race (golang/go#75804, fixed in Go 1.27), no failing input: once more"; \
				continue; \
			fi; \
			exit 1; \
		done; \
	done <<< "$$targets"

bench: ## Benchmarks matching BENCH in PKG, with allocations
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem $(PKG)

# bench/compare writes results.json, table.md and logs/ into a directory
# of its own; bench/plot (a module of its own, so that gonum stays out of
# go.mod) draws RSS per connection from it. A -quick smoke run keeps its
# plot in its directory and leaves bench/rss-per-conn.png alone. The
# target exits with compare's status, or 1 when only the plot fails.
bench-compare: ## Run presenced (epoll, netpoll), bench/baseline and Centrifugo on the same presence-load workloads, one after another (~30 min; not part of test): table of ratios and raw JSON in .cache/bench-compare/<UTC time>/, plot in bench/rss-per-conn.png; flags in ARGS (-quick, -servers, -conns-curve, -idle, -h)
	@out=$(CACHE)/bench-compare/$$(date -u +%Y%m%dT%H%M%SZ); \
	$(GO) run ./bench/compare -out $$out $(ARGS); st=$$?; \
	[ -f $$out/results.json ] || exit $$st; \
	plot=../rss-per-conn.png; \
	case " $(ARGS) " in *" -quick "*|*" -quick=true "*) plot=$$out/rss-per-conn.png;; esac; \
	(cd bench/plot && $(GO) run . -in $$out/results.json -out $$plot) || { [ $$st -ne 0 ] || st=1; }; \
	exit $$st

lint: $(STATICCHECK) ## gofmt check, go vet (also of deploy/check) and staticcheck
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd deploy/check && $(GO) vet ./...
	$(STATICCHECK) ./...

$(STATICCHECK):
	@echo "lint: installing staticcheck $(STATICCHECK_VERSION)"
	@GOBIN=$(dir $@) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

centrifugo: $(CENTRIFUGO) ## Install the pinned Centrifugo (CENTRIFUGO_VERSION) into .cache/tools (go install from the module proxy; not part of make test)

$(CENTRIFUGO):
	@echo "centrifugo: installing Centrifugo $(CENTRIFUGO_VERSION) (a few minutes)"
	@GOBIN=$(dir $@) $(GO) install github.com/centrifugal/centrifugo/v6@$(CENTRIFUGO_VERSION)

ci: lint test ## What a careful CI runs: lint, then the whole suite

# apt_install installs the Debian packages in $$missing, when any: with a
# temporary /usr/sbin/policy-rc.d that keeps apt-get from starting the
# services it installs (nginx on :80, prometheus on :9090), which are then
# disabled; output in .cache/apt.log. Without apt-get or root it says so and
# leaves the rest to the checks (they fail where a tool is missing).
define apt_install
if [ -z "$$missing" ]; then exit 0; fi; \
if ! command -v apt-get >/dev/null 2>&1 || { [ "$$(id -u)" != 0 ] && [ -z "$(SUDO)" ]; }; then \
	echo "$@: cannot install$$missing (needs apt-get as root); the checks that need them fail"; exit 0; \
fi; \
echo "$@: installing$$missing"; \
mkdir -p $(CACHE); \
rcd=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	rcd=1; printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null && $(SUDO) chmod 755 /usr/sbin/policy-rc.d; \
fi; \
ok=1; { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; } >$(CACHE)/apt.log 2>&1 || ok=""; \
[ -z "$$rcd" ] || $(SUDO) rm -f /usr/sbin/policy-rc.d; \
for svc in nginx haproxy prometheus; do case " $$missing " in *" $$svc "*) $(SUDO) systemctl disable $$svc >/dev/null 2>&1 || true;; esac; done; \
if [ -z "$$ok" ]; then cat $(CACHE)/apt.log; echo "$@: apt-get failed"; exit 1; fi
endef

# What make deploy-check needs, no more (no compiler, browser or npm):
# nginx, haproxy and openssl (nginx -t, haproxy -c and the proxy tests,
# with a throwaway certificate), redis-server (the metric tests' node runs
# with -redis), prometheus (Debian's promtool), systemd (systemd-analyze,
# absent from minimal images and containers) and util-linux (unshare).
# It also says when this Go is older than deploy/check/go.mod's go line
# (GOTOOLCHAIN=auto then needs the network).
deps-deploy: ## Install what deploy-check needs (apt-get: nginx, haproxy, openssl, redis-server, prometheus for promtool, systemd for systemd-analyze, util-linux); says when Go is older than deploy/check's floor
	@need=$$(awk '$$1 == "go" { print $$2; exit }' deploy/check/go.mod); \
	have=$$($(GO) env GOVERSION 2>/dev/null | sed 's/^go//; s/[^0-9.].*//') || true; \
	if [ -n "$$need" ] && [ -n "$$have" ] && [ "$$(printf '%s\n%s\n' "$$need" "$$have" | sort -V | head -1)" != "$$need" ]; then \
		echo "deps: make deploy-check (part of make test) needs Go $$need (deploy/check/go.mod: Prometheus's floor); this is Go $$have. With GOTOOLCHAIN=auto, go downloads go$$need (network needed); offline, install Go $$need or later"; \
	fi
	@missing=""; \
	[ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	[ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	[ -x /usr/bin/promtool ] || missing="$$missing prometheus"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v unshare >/dev/null 2>&1 || missing="$$missing util-linux"; \
	$(apt_install)

# Installs only what is missing, so a second run is silent: what
# deploy-check needs (deps-deploy), a C compiler (the race detector needs
# cgo), Debian's python3-websockets (the interop test's independent
# client), redis-server and redis-tools (the tests of many nodes start
# their own Redis, Cluster and Sentinel processes), Node.js and npm (the
# JS SDK's tests), Debian's chromium (the browser tests drive
# /usr/bin/chromium; they never download a browser), then clients/js's
# packages with npm ci when node_modules is missing or older than the
# lockfile.
deps: deps-deploy ## Install missing test dependencies (deps-deploy's; apt-get: gcc, python3-websockets, redis-tools, nodejs, npm, chromium; npm ci in clients/js)
	@missing=""; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc libc6-dev"; \
	$(PYTHON) -c 'import websockets' >/dev/null 2>&1 || missing="$$missing python3-websockets"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium fonts-dejavu-core"; \
	$(apt_install)
	@if [ -f $(JS_STAMP) ] && [ $(JS_STAMP) -nt $(JS)/package-lock.json ] && [ $(JS_STAMP) -nt $(JS)/package.json ]; then exit 0; fi; \
	if ! command -v npm >/dev/null 2>&1; then echo "deps: npm not found: cannot install $(JS)'s packages; the JS tests fail"; exit 0; fi; \
	echo "deps: npm ci in $(JS)"; \
	mkdir -p $(CACHE); \
	if ! (cd $(JS) && npm ci --no-audit --no-fund) >$(CACHE)/npm.log 2>&1; then \
		cat $(CACHE)/npm.log; echo "deps: npm ci failed"; exit 1; \
	fi; \
	touch $(JS_STAMP)
