# Mote's developer commands. `make test` is the one CI runs (.ci/run).
GO      ?= go
BIN     ?= bin/mote
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/motemq/mote/broker.Version=$(VERSION)

.PHONY: all build test test-short services vet fmt bench bench-go fuzz docker clean web

all: build

## build: a static binary at bin/mote
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/mote

## test: start or install what the tests need, run every test with the race detector, then every fuzz target briefly
test: services
	$(GO) vet ./...
	$(GO) test -race -timeout 12m ./...
	FUZZTIME=2s ./scripts/fuzz.sh

## test-short: the tests without the services check (for a quick loop)
test-short:
	$(GO) test -race -timeout 12m ./...

## services: make sure RabbitMQ (127.0.0.1:5672), Mosquitto (127.0.0.1:1883) and Chromium are there
services:
	sh scripts/ensure-services.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

fmt:
	gofmt -w .

## bench: the broker's Go benchmarks, then a short `mote bench pubsub` against a fresh broker
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./broker/ ./frame/
	@rm -rf /tmp/mote-bench-data
	@$(BIN) serve --data-dir /tmp/mote-bench-data --mqtt 127.0.0.1:21883 --ws '' --http '' --log-level warn & \
	  pid=$$!; sleep 1; \
	  $(BIN) bench pubsub --url mqtt://127.0.0.1:21883 --qos 1 --topic-mode fanout --subs 3 --duration 5s; \
	  kill $$pid; wait $$pid; rm -rf /tmp/mote-bench-data

## bench-compare: Mote (every feature on) vs plain mochi vs a fresh Mosquitto, same `mote bench`
## scenarios, free loopback ports; table to docs/bench-compare.md (~8 min; needs mosquitto, jq)
.PHONY: bench-compare soak
bench-compare:
	./scripts/bench-compare.sh

## soak: 100 kill -9 cycles, the leak-checking soak (MOTE_SOAK_DURATION, default 5m) and the
## longer hostile-input load runs
soak:
	MOTE_SOAK=1 $(GO) test -race -run 'Cycles|Soak' -timeout 60m -v ./test/e2e/
	MOTE_SOAK=1 $(GO) test -race -count=1 -timeout 20m ./test/reliability/

## fuzz: every fuzz target of the module for FUZZTIME each (default 30s)
FUZZTIME ?= 30s
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

## web: rebuild the browser console (web/dist, committed and embedded in the binary) from web/src
web:
	cd web && npm ci && npm run build

docker:
	docker build -t mote:$(VERSION) .

clean:
	rm -rf bin
