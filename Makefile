# Perch: `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -o pipefail -euc
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO      ?= go
BIN     := bin/perch
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Extra arguments for `make run`, e.g. make run ARGS="--port-base 9001".
ARGS    ?=

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build bin/perch
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/perch

.PHONY: run
run: build ## Run the whole system on this machine (perch dev): three edges on :8081-8083
	$(BIN) dev $(ARGS)

.PHONY: test
test: ## Run every test with the race detector (PostgreSQL ones need PERCH_TEST_POSTGRES)
	$(GO) test -race -count=1 -timeout 20m ./...
	@# Allocation checks of the hot path, which the race detector would skew.
	$(GO) test -count=1 -run 'TestGetHit' ./edge
	$(GO) test -count=1 -run 'TestAllowDoesNotAllocate' ./edge/ratelimit
	$(GO) test -count=1 -run 'TestCacheHitDoesNotAllocate' ./internal/auth

.PHONY: test-postgres
test-postgres: ## Start a throwaway PostgreSQL and run every test against it too
	PERCH_TEST_POSTGRES="$$(.ci/postgres start)" $(MAKE) test

.PHONY: bench
bench: build ## Run the standard load suite (perch bench) against perch dev; reports in bench/results/
	bench/suite.sh $(BIN) bench/results

.PHONY: bench-go
bench-go: ## Run the Go benchmarks of the hot paths
	$(GO) test -run '^$$' -bench 'GetHit' -benchmem -count 1 ./edge ./bench

.PHONY: bench-writes
bench-writes: ## The write path (edge → JetStream → core → PostgreSQL) beside direct upserts, 16 clients, on shared CPUs and on two tiers
	PERCH_TEST_POSTGRES="$${PERCH_TEST_POSTGRES:-$$(.ci/postgres start)}" \
	  $(GO) test -run '^$$' -bench BenchmarkWritePath -benchtime $${WRITES:-20000}x -count 1 ./bench

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s)
	@for pkg in ./edge ./edge/ratelimit ./core ./internal/wire ./internal/auth ./bench/load; do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-30s} $$pkg; \
	  done; \
	done

.PHONY: lint
lint: ## go vet and staticcheck
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

.PHONY: fmt-check
fmt-check: ## Fail when a file is not gofmt'ed
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt'ed:"; echo "$$out"; exit 1; fi

.PHONY: tidy-check
tidy-check: ## Fail when go.mod or go.sum is not tidy
	$(GO) mod tidy -diff

.PHONY: ci
ci: fmt-check tidy-check lint test ## Everything CI checks

.PHONY: clean
clean: ## Remove build output (not ./data)
	rm -rf bin

# The edge read path's benchmarks (bench/README.md): each prints its figures beside its target.

.PHONY: bench-invalidation
bench-invalidation: ## Write → every edge of three serves it (p50/p99 ms), over WRITES (default 500) writes
	$(GO) test -run '^$$' -bench BenchmarkInvalidation -benchtime $${WRITES:-500}x -count 1 ./bench

.PHONY: bench-revocation
bench-revocation: ## Logout → every edge of three refuses the session's token (p50/p99 ms), over 200 logouts
	$(GO) test -run '^$$' -bench BenchmarkRevocation -benchtime 200x -count 1 ./bench

.PHONY: bench-memory
bench-memory: ## Peak RSS of a perch edge process holding 100k cached 1 KB documents, ÷ their bytes
	$(GO) test -run '^$$' -bench BenchmarkEdgeMemory -benchtime 1x -count 1 -timeout 20m ./bench

.PHONY: bench-nginx
bench-nginx: ## Cache-hit GET through one edge beside nginx proxy_cache (needs nginx: apt-get install nginx-light)
	$(GO) test -run '^$$' -bench BenchmarkGetHitNginx -benchmem -benchtime $${BENCHTIME:-3s} -count 1 ./bench

.PHONY: bench-pinned
bench-pinned: ## Cache-hit GET, one CPU each: perch edge beside the bare fasthttp ceiling and nginx (needs wrk, nginx-light)
	$(GO) test -run '^$$' -bench BenchmarkGetHitPinned -benchtime 1x -count 1 -timeout 20m ./bench

.PHONY: bench-read
bench-read: bench-invalidation bench-nginx bench-pinned bench-memory ## The benchmarks of the edge read path
