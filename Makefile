# indexwire: see README.md.
GO       ?= go
BIN      := bin/indexwire
FUZZTIME ?= 20s

.PHONY: build install test bench fuzz lint demo deps clean

build:
	$(GO) build -o $(BIN) ./cmd/indexwire

install: build
	install -m 0755 $(BIN) /usr/local/bin/indexwire

deps:
	./scripts/deps.sh

# Everything: unit tests, fuzz seeds, and the tests that run real Cyrus and
# real FUSE (they need root; they skip with a message otherwise). One package
# at a time (-p 1): packages that start Cyrus, FUSE mounts and timed links
# would otherwise compete for this 2-core machine and for /dev/log.
test:
	$(GO) vet ./...
	$(GO) test -p 1 -count=1 -timeout 25m ./...

# One run: codec and component Go benchmarks, the overlay against a plain
# directory, Cyrus's replication against indexwire. Prints markdown tables
# and writes out/bench.md, out/latency.png (needs root, FUSE, tcpdump and
# Cyrus). BENCHFLAGS: -quick, -big (adds N = 100 000), -only SECTIONS.
BENCHFLAGS ?=
bench: build
	@mkdir -p out
	$(GO) run ./tests/bench -bin $(BIN) -out out $(BENCHFLAGS)

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeIndex$$' -fuzztime $(FUZZTIME) ./diff/
	$(GO) test -run '^$$' -fuzz '^FuzzParseMailboxHeader$$' -fuzztime $(FUZZTIME) ./diff/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeBatch$$' -fuzztime $(FUZZTIME) ./diff/
	$(GO) test -run '^$$' -fuzz '^FuzzReadFrame$$' -fuzztime $(FUZZTIME) ./net/link/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeHello$$' -fuzztime $(FUZZTIME) ./net/link/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeAck$$' -fuzztime $(FUZZTIME) ./net/link/

lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; \
	 else $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./... || echo "lint: staticcheck not available, skipped"; fi

demo: deps build
	$(GO) run ./tests/demo

clean:
	rm -rf bin out
