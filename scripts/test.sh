#!/usr/bin/env bash
# Runs every check lifeboat has: formatting, vet, staticcheck, the unit tests
# (with the race detector), and the end-to-end tests that start real agent
# processes. Needs Go; fetches modules and staticcheck through the Go module
# proxy on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"
STATICCHECK_VERSION=2026.2.2

go mod download
if ! staticcheck -version 2>/dev/null | grep -q "$STATICCHECK_VERSION"; then
  echo "== installing staticcheck $STATICCHECK_VERSION"
  GOFLAGS= go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
staticcheck ./...
echo "== build"
go build -o bin/lifeboat ./cmd/lifeboat
echo "== unit tests (race detector)"
go test -race -count=1 ./internal/... ./cmd/...
echo "== end-to-end tests (real agent processes)"
go test -count=1 -timeout 15m ./test/...
