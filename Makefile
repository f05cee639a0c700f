# fhirbucket developer targets. Tools are pinned and installed into the
# git-ignored .tools/bin by scripts/install-tools.sh; nothing but Go is
# needed on the machine.

TOOLS_BIN := $(CURDIR)/.tools/bin
export PATH := $(TOOLS_BIN):$(PATH)

.PHONY: test tools lint fuzz bench

## test: the full suite with the race detector, including the S3 tests
## against MinIO and versitygw (installed into .tools/bin if missing) and
## the fhir-kit-client test (node and npm), then every fuzz target for a
## few seconds.
test: tools
	RUN_MINIO_S3_TESTS=1 RUN_VERSITYGW_S3_TESTS=1 RUN_FHIRKIT_TESTS=1 PATH="$(TOOLS_BIN):$$PATH" \
		go test -race -count=1 -timeout 20m ./...
	bash scripts/fuzz.sh

## fuzz: every go test -fuzz target for FUZZTIME (default 4s) each.
fuzz:
	bash scripts/fuzz.sh

## tools: install the pinned MinIO and versitygw binaries.
tools:
	bash scripts/install-tools.sh minio versitygw

## lint: gofmt, go vet and staticcheck must be clean, and go.mod/go.sum
## tidy (go mod tidy -diff prints what tidy would change and fails).
lint:
	bash scripts/install-tools.sh staticcheck
	@go mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then \
		echo "gofmt -l reports unformatted files:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	$(TOOLS_BIN)/staticcheck ./...

## bench: the benchmark report (bench-report.md/.json) against a private
## MinIO; flags for other backends: go run ./cmd/fhirbucket bench --help.
bench:
	bash scripts/install-tools.sh minio
	go run ./cmd/fhirbucket bench $(BENCH_FLAGS)
