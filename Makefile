SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

BIN := $(CURDIR)/.bin
# Every module of go.work, e.g. "./common ./controlplane ...".
MODULES := $(shell go work edit -json | sed -n 's/^[[:space:]]*"DiskPath": "\(.*\)".*/\1/p')
# The modules that hold Go packages (tools only pins the code generators' versions).
GO_MODULES := $(shell for m in $(MODULES); do find $$m -name '*.go' -not -path '*/node_modules/*' -print -quit | grep -q . && echo $$m; done)
GENERATED_DIRS := common/gen web-admin/src/gen db/sqlcdb
BINARIES := ./controlplane/cmd/pds-controlplane ./dataplane/cmd/pds-dataplane ./dataplane/cmd/pds-demo-publisher ./dataplane/cmd/pds-load
GO_TOOLS := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-vtproto $(BIN)/protoc-gen-connect-go $(BIN)/sqlc
# npm rewrites this file on every install, so it marks node_modules as up to date.
NPM_STAMP := web-admin/node_modules/.package-lock.json

# Per test binary; the whole make test stays well under 30 minutes on 2 cores.
TEST_TIMEOUT ?= 15m
# Extra flags for go test, e.g. make test GO_TEST_FLAGS='-run TestPublish -v'.
GO_TEST_FLAGS ?=

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install what is missing (PostgreSQL, shellcheck, Java 17, Maven, the Pulsar distribution, npm packages, Go tools); quick when all is there
	deploy/scripts/ensure-deps.sh

.PHONY: tools
tools: $(GO_TOOLS) $(NPM_STAMP) ## Build the pinned code generators into .bin/ and npm-install web-admin (skipped when up to date)

# GOWORK=off: the tools build with exactly the versions tools/go.mod pins, not the workspace's.
$(GO_TOOLS) &: tools/go.mod tools/go.sum
	mkdir -p $(BIN)
	cd tools && GOWORK=off go build -o $(BIN)/ tool
	touch $(GO_TOOLS)

$(NPM_STAMP): web-admin/package.json web-admin/package-lock.json
	cd web-admin && npm ci --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: gen
gen: tools ## Regenerate Go and TypeScript from proto/ (buf) and the database access code (sqlc)
	$(BIN)/buf format -w
	$(BIN)/buf generate
	cd db && $(BIN)/sqlc generate

.PHONY: check-gen
check-gen: gen ## Fail when committed generated code (or proto formatting) is stale
	@if ! git diff --quiet -- proto $(GENERATED_DIRS) || \
		[[ -n "$$(git ls-files --others --exclude-standard -- $(GENERATED_DIRS))" ]]; then \
		echo "check-gen: generated code differs from what is committed:" >&2; \
		git status --short -- proto $(GENERATED_DIRS) >&2; \
		echo "check-gen: run 'make gen' and commit the result" >&2; \
		exit 1; \
	fi
	@echo "check-gen: generated code is fresh"

.PHONY: lint
lint: tools ## buf lint, buf format check, shellcheck, gofmt and go vet in every module
	$(BIN)/buf lint
	$(BIN)/buf format -d --exit-code
	shellcheck --severity=warning deploy/scripts/*.sh .ci/run
	@unformatted="$$(gofmt -l $(GO_MODULES))"; \
	if [[ -n "$$unformatted" ]]; then echo "lint: not gofmt'd (run gofmt -w):" >&2; echo "$$unformatted" >&2; exit 1; fi
	for m in $(GO_MODULES); do (cd $$m && echo "go vet $$m" && go vet ./...); done

.PHONY: build
build: ## Build every module in the workspace and on its own (GOWORK=off), binaries into .bin/
	for m in $(GO_MODULES); do \
		(cd $$m && echo "go build $$m" && go build ./... && GOWORK=off go build ./...); \
	done
	$(MAKE) binaries

.PHONY: binaries
binaries: ## Build pds-controlplane, pds-dataplane, pds-demo-publisher and pds-load into .bin/
	mkdir -p $(BIN)
	go build -o $(BIN)/ $(BINARIES)

# Pulsar takes 20-60 s to start: it starts in the background while check-gen, lint and build run.
.PHONY: test
test: deps ## Everything CI runs: deps, check-gen, lint, build, then go test -race with a real PostgreSQL and Pulsar
	deploy/scripts/with-pulsar.sh --no-wait $(MAKE) check-gen lint build test-with-services

# Run by make test inside with-pulsar.sh: waits for its Pulsar, then go test -race with a temporary PostgreSQL.
.PHONY: test-with-services
test-with-services:
	@[[ -n "$${PDS_TEST_PULSAR_DIR:-}" ]] || { echo "test-with-services: run it through make test (with-pulsar.sh)" >&2; exit 1; }
	deploy/scripts/pulsar.sh wait "$$PDS_TEST_PULSAR_DIR" >/dev/null
	deploy/scripts/with-postgres.sh $(MAKE) go-test GO_TEST_FLAGS='-race $(GO_TEST_FLAGS)'

.PHONY: go-test
go-test: ## go test in every module (uses PDS_TEST_DATABASE_URL and PDS_TEST_PULSAR_URL/_ADMIN_URL when set; make test sets them)
	@failed=(); \
	for m in $(GO_MODULES); do \
		echo "go test $$m"; \
		(cd $$m && go test -timeout $(TEST_TIMEOUT) $(GO_TEST_FLAGS) ./...) || failed+=("$$m"); \
	done; \
	if (( $${#failed[@]} )); then echo "go-test: tests failed in: $${failed[*]}" >&2; exit 1; fi

.PHONY: test-short
test-short: ## Quick tests only (go test -short: no PostgreSQL, no processes)
	$(MAKE) go-test GO_TEST_FLAGS='-short $(GO_TEST_FLAGS)'

# Where bench-micro writes its output (bench-load's results directory is set by deploy/scripts/bench.sh).
BENCH_DIR ?= bench-results

.PHONY: bench
bench: bench-load bench-micro ## All benchmarks: the load suite, then the Go micro-benchmarks (BENCH_QUICK=1: a quick pass)

.PHONY: bench-load
bench-load: ## Load suite: PDS on the embedded broker and on Pulsar beside the baselines and Centrifugo (deploy/scripts/bench.sh; BENCH_QUICK=1 checks it in minutes)
	deploy/scripts/bench.sh

# BENCH_QUICK=1 runs each micro-benchmark once (-benchtime=1x), to check that they all still run.
.PHONY: bench-micro
bench-micro: ## Go micro-benchmarks in every module (-benchmem), also written to bench-results/micro.txt (BENCH_DIR)
	mkdir -p $(BENCH_DIR)
	for m in $(GO_MODULES); do \
		(cd $$m && echo "go test -bench $$m" && go test -bench . -benchmem -run '^$$' \
			$(if $(filter 1,$(BENCH_QUICK)),-benchtime=1x) $(GO_TEST_FLAGS) ./...); \
	done 2>&1 | tee $(BENCH_DIR)/micro.txt

.PHONY: run
run: ## Run PostgreSQL, control plane, data plane and the demo publisher locally; PDS_BROKER=pulsar also Pulsar (Ctrl-C stops all)
	deploy/scripts/run.sh

.PHONY: clean
clean: ## Remove built binaries, logs and Go test caches (keeps tools, npm packages, ./data/postgres and ./data/pulsar)
	rm -f $(BIN)/pds-controlplane $(BIN)/pds-dataplane $(BIN)/pds-demo-publisher $(BIN)/pds-load
	rm -rf data/logs
	go clean -testcache

.PHONY: clean-all
clean-all: clean ## Also remove the built tools, web-admin/node_modules and ./data (the local database and Pulsar data too)
	rm -rf $(BIN) web-admin/node_modules data
