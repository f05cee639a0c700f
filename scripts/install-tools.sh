#!/usr/bin/env bash
# Installs the pinned test and lint tools into .tools/bin of the repository
# (git-ignored), building them with `go install` from the Go module proxy.
# A tool already installed at the pinned version is skipped, so running this
# before every `make test` costs nothing once done.
#
# Usage: scripts/install-tools.sh [tool...]   (default: minio versitygw)
# Tools: minio versitygw staticcheck
# TOOLS_BIN overrides the target folder.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${TOOLS_BIN:-$root/.tools/bin}"
mkdir -p "$bin"
bin="$(cd "$bin" && pwd)"

# Pinned versions. MinIO is AGPL: the project runs it as a separate test
# process only and never imports its packages.
declare -A pkg=(
  [minio]="github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"
  [versitygw]="github.com/versity/versitygw/cmd/versitygw@v1.8.0"
  [staticcheck]="honnef.co/go/tools/cmd/staticcheck@v0.8.2"
)

tools=("$@")
if [ ${#tools[@]} -eq 0 ]; then
  tools=(minio versitygw)
fi

for tool in "${tools[@]}"; do
  spec="${pkg[$tool]:-}"
  if [ -z "$spec" ]; then
    echo "install-tools: unknown tool '$tool' (known: ${!pkg[*]})" >&2
    exit 2
  fi
  # The stamp records which pinned version the binary was built from, so a
  # change of pin reinstalls it.
  stamp="$bin/.$tool.version"
  if [ -x "$bin/$tool" ] && [ "$(cat "$stamp" 2>/dev/null || true)" = "$spec" ]; then
    echo "install-tools: $tool already installed ($spec)"
    continue
  fi
  echo "install-tools: installing $spec into $bin (the first build takes a few minutes)"
  start=$SECONDS
  GOBIN="$bin" go install "$spec"
  echo "$spec" > "$stamp"
  echo "install-tools: $tool installed in $((SECONDS - start))s"
done
