# cluster-backup: build, test, lint, demo.
#
#   make test    everything CI runs: provisions the real test servers (built
#                once from the Go module proxy, then cached), lints, and runs
#                unit and integration tests with -race
#   make demo    starts a local kube-apiserver + MinIO and backs the cluster up
#   make build   builds bin/cluster-backup

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

export CLUSTER_BACKUP_ASSETS := $(shell hack/provision.sh --print-dir)
GOLANGCI_LINT := $(CLUSTER_BACKUP_ASSETS)/golangci-lint
TEST_SERVERS  := etcd kube-apiserver kube-controller-manager kubectl minio mc age weed helm chromium
FUZZTIME ?= 30s

.PHONY: all build test unit lint provision fuzz demo image bench bench-stores clean

all: build

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/cluster-backup ./cmd/cluster-backup

provision:
	hack/provision.sh $(TEST_SERVERS) golangci-lint govulncheck vulndb dockerfilelint

test: provision lint
	go test -race -count=1 -timeout 30m ./...
	$(MAKE) fuzz FUZZTIME=10s

# Unit tests only: integration tests skip themselves without the servers.
unit:
	CLUSTER_BACKUP_ASSETS=/nonexistent CI= go test -race -count=1 ./...

lint:
	@hack/provision.sh golangci-lint govulncheck vulndb dockerfilelint helm >/dev/null
	@out=$$(gofmt -l . | grep -v '^hack/.*/' || true); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go mod tidy -diff
	go vet ./...
	$(GOLANGCI_LINT) run ./...
	go run ./hack/vulncheck -govulncheck $(CLUSTER_BACKUP_ASSETS)/govulncheck -db $(CLUSTER_BACKUP_ASSETS)/vulndb ./...
	$(CLUSTER_BACKUP_ASSETS)/dockerfilelint Dockerfile
	$(CLUSTER_BACKUP_ASSETS)/helm lint --strict charts/cluster-backup -f charts/cluster-backup/ci/default-values.yaml
	$(CLUSTER_BACKUP_ASSETS)/helm lint --strict charts/cluster-backup -f charts/cluster-backup/ci/full-values.yaml

fuzz:
	go test ./config -run '^$$' -fuzz FuzzParseConfigMap -fuzztime $(FUZZTIME)
	go test ./encode -run '^$$' -fuzz FuzzEncodeRoundTrip -fuzztime $(FUZZTIME)
	go test ./encode -run '^$$' -fuzz FuzzEmitMatchesYAMLv2 -fuzztime $(FUZZTIME)
	go test ./wire -run '^$$' -fuzz FuzzDecodeObject -fuzztime $(FUZZTIME)
	go test ./wire -run '^$$' -fuzz FuzzReadList -fuzztime $(FUZZTIME)
	go test ./wire -run '^$$' -fuzz FuzzLineFramer -fuzztime $(FUZZTIME)
	go test ./pack -run '^$$' -fuzz FuzzLoad -fuzztime $(FUZZTIME)
	go test ./filter -run '^$$' -fuzz FuzzSelectors -fuzztime $(FUZZTIME)

demo: build
	hack/provision.sh etcd kube-apiserver kube-controller-manager minio
	go run ./hack/demo --binary bin/cluster-backup

# Benchmarks on real servers (not part of make test; about 8 minutes).
# BENCH_FLAGS='-sizes 1000,10000 -latency-duration 30s' for a shorter run.
bench:
	hack/provision.sh etcd kube-apiserver minio
	go run ./bench $(BENCH_FLAGS)

# The first backup of 10,000 ConfigMaps on every store the bench provisions,
# each against its own raw PUT ceiling (about 10 minutes); results in
# bench/results/<store>/.
BENCH_STORES ?= minio-tmpfs seaweedfs minio-distributed
bench-stores:
	hack/provision.sh etcd kube-apiserver minio weed
	for store in $(BENCH_STORES); do \
		direct=; [ $$store = minio-tmpfs ] && direct=-direct; \
		go run ./bench -store $$store $$direct -sizes 10000 -scenarios initial -repeats 3 -out bench/results/$$store || exit 1; \
	done

# The runtime image for linux/amd64 and linux/arm64 as an OCI layout, and its
# SPDX SBOM, in bin/image (no Docker engine: go-containerregistry); git-sync's
# image, with Debian's git and ssh client fetched by apt, in bin/image-git.
image:
	go run ./hack/image -out bin/image -version $(VERSION) -commit $(COMMIT)
	go run ./hack/image -git-sync -out bin/image-git -version $(VERSION) -commit $(COMMIT)

clean:
	rm -rf bin backup
