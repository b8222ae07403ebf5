# Meridian's build, test, lint, bench and sim entry points. Everything the targets need is
# fetched by the targets themselves (Go modules through the module proxy, Debian packages by
# the bench scripts), so a fresh machine with Go runs them as they are.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Packages whose tests exercise concurrency run under the race detector.
RACE_PKGS   ?= ./edge/... ./origin/... ./purge/... ./control/... ./dnsroute/... ./fleet/... \
               ./internal/rawconn/... ./internal/writegather/...
TEST_FLAGS  ?= -count=1 -timeout 12m

.PHONY: all build test test-long lint cross bench sim fuzz clean

all: build

build:
	$(GO) build -o bin/meridian .

test:
	$(GO) vet ./...
	$(GO) test $(TEST_FLAGS) -race $(RACE_PKGS)
	# quic-go's 0-RTT client races with itself: this edge test is built without -race.
	$(GO) test $(TEST_FLAGS) -run '^TestEarlyData$$' ./edge/
	$(GO) test $(TEST_FLAGS) $$($(GO) list ./... | grep -v -E '/(edge|origin|purge|control|dnsroute|fleet|internal/rawconn|internal/writegather)(/|$$)')

# Long soak and fault runs, and checks that need extra Debian packages: headless Chromium for
# the simulator's report, systemd-analyze and cloud-init for the rendered deploy files.
LONG_DEBS ?= chromium systemd cloud-init
test-long:
	@missing=""; for p in $(LONG_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	MERIDIAN_LONG=1 $(GO) test -count=1 -timeout 60m -race ./...

lint: cross
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Linux is the deploy target; other systems must still compile, tests included (vet builds
# them): Windows for the code that is not Unix's, macOS for Unix's that is not Linux's (FreeBSD
# takes the same files). A few seconds once the build cache is warm, minutes when it is cold.
CROSS ?= windows/amd64 darwin/arm64
cross:
	@for t in $(CROSS); do \
	  echo "GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) vet ./..."; \
	  GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) vet ./... || exit 1; \
	done

# Go benchmarks for the hot paths; bench/*.sh put Meridian beside nginx, Varnish and gdnsd.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# The main job's exit code says whether every invariant held (--check), as a CI job expects.
sim: build
	./bin/meridian sim --check

# Short fuzzing pass over every fuzz target (FUZZTIME each).
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin
