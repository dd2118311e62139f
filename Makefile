# snapfs — see README.md. `make demo` and `make test` set up a fresh machine themselves.
GO      ?= go
BIN     := bin/snapfs
PREFIX  ?= /usr/local

.PHONY: all build setup test demo bench install clean

all: build

setup:
	@scripts/setup.sh

build:
	$(GO) build -o $(BIN) ./cmd/snapfs

test: setup build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 9m ./...

demo: setup build
	scripts/demo.sh

bench: setup build
	scripts/bench.sh

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/snapfs

clean:
	rm -rf bin
