#!/usr/bin/env bash
# Runs every check lifeboat has: formatting, vet, staticcheck, the unit tests
# (with the race detector), and the end-to-end tests that start real agent
# processes. Needs Go; fetches modules and the pinned tools (staticcheck, a
# `tool` directive in go.mod) through the Go module proxy on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

# Debian packages the tests use: the real AWS CLI (the simulator's
# conformance tests), iproute2 (network namespaces), nftables and iptables
# (cutting one path between hosts), keepalived (measured side by side) and
# systemd (systemd-analyze, for the packaged unit) and chromium (the web
# console, driven headless).
missing=()
[ -x /usr/bin/aws ] || missing+=(awscli)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v keepalived >/dev/null 2>&1 || [ -x /usr/sbin/keepalived ] || missing+=(keepalived)
# systemd-analyze verifies the packaged unit (TestDebianPackage).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# A headless browser drives the web console (TestConsoleInBrowser).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed (apt-get install ${missing[*]}); the tests that need them are skipped" >&2
  fi
fi

go mod download

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
go tool staticcheck ./...
echo "== build"
go build -o bin/lifeboat ./cmd/lifeboat
echo "== unit tests (race detector)"
go test -race -count=1 ./internal/... ./cmd/...
echo "== end-to-end tests (real agent processes)"
go test -count=1 -timeout 15m ./test/...
