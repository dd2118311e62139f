# snapfs — see README.md. `make demo` and `make test` set up a fresh machine themselves.
GO      ?= go
BIN     := bin/snapfs
PREFIX  ?= /usr/local

.PHONY: all build setup test fuzz demo bench install clean

all: build

setup:
	@scripts/setup.sh

build:
	$(GO) build -o $(BIN) ./cmd/snapfs

# An execution count, not a duration: go1.26's fuzzer can fail a run with "context deadline
# exceeded" when a duration runs out while a worker is busy (golang/go#75804, fixed in go1.27),
# as it did once here under load. 200000 executions take each target about 10 s on the project's
# machine.
FUZZTIME ?= 200000x

test: setup build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 9m ./...
	$(MAKE) --no-print-directory fuzz

# A short run of every fuzz target (corpora in PKG/testdata/fuzz); FUZZTIME=5000000x (or 1m) for a
# longer one.
# Minimizing a new input is capped at 1s: by default it may take a minute, during which a short run
# fuzzes nothing (FuzzDecodeRecord managed ~140 executions in 10s).
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParseCommand$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s ./fs
	$(GO) test -run='^$$' -fuzz='^FuzzCommandPrefix$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s ./fs
	$(GO) test -run='^$$' -fuzz='^FuzzValidateName$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s ./chain
	$(GO) test -run='^$$' -fuzz='^FuzzParseRef$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s ./chain
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeRecord$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s ./store

demo: setup build
	scripts/demo.sh

bench: setup build
	scripts/bench.sh

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/snapfs

clean:
	rm -rf bin
