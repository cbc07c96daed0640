#!/usr/bin/env bash
# Builds the Debian package: dist/lifeboat_VERSION_ARCH.deb, with the binary,
# the systemd unit, a template config (0600), man pages generated from the
# CLI and shell completions. Uses nfpm, a Go tool pinned in go.mod.
#   scripts/package.sh            # version from git (0.2.0~git<date>.<sha>)
#   LIFEBOAT_VERSION=1.0.0 scripts/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

base=$(sed -n 's/^var version = "\(.*\)"$/\1/p' cmd/lifeboat/main.go)
base=${base%-dev}
if [ -z "${LIFEBOAT_VERSION:-}" ]; then
  if rev=$(git log -1 --format='%cd.%h' --date=format:%Y%m%d 2>/dev/null); then
    LIFEBOAT_VERSION="${base}~git${rev}"
  else
    LIFEBOAT_VERSION="${base}"
  fi
fi
export LIFEBOAT_VERSION
export GOARCH=${GOARCH:-$(go env GOARCH)}
STAGE=dist/stage  # packaging/nfpm.yaml names it
rm -rf "$STAGE"
mkdir -p "$STAGE/man" "$STAGE/completion"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${LIFEBOAT_VERSION}" -o "$STAGE/lifeboat" ./cmd/lifeboat
"$STAGE/lifeboat" gen-man "$STAGE/man"
gzip -9n "$STAGE"/man/*.1
"$STAGE/lifeboat" completion bash > "$STAGE/completion/lifeboat.bash"
"$STAGE/lifeboat" completion zsh > "$STAGE/completion/_lifeboat"
"$STAGE/lifeboat" completion fish > "$STAGE/completion/lifeboat.fish"
go tool nfpm package --config packaging/nfpm.yaml --packager deb --target dist/
ls dist/*.deb
