#!/usr/bin/env bash
# Fails when sdk/include/certconn/abi.h differs from the header recorded for the version it
# declares (sdk/abi-versions.txt): a change to the ABI must come with a version bump.
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
header="$sdk/include/certconn/abi.h"
major=$(sed -n 's/^#define CERTCONN_ABI_MAJOR \([0-9]*\)$/\1/p' "$header")
minor=$(sed -n 's/^#define CERTCONN_ABI_MINOR \([0-9]*\)$/\1/p' "$header")
version="$major.$minor"
hash=$(sha256sum "$header" | cut -d' ' -f1)
recorded=$(awk -v v="$version" '$1 == v {print $2}' "$sdk/abi-versions.txt")
if [ -z "$recorded" ]; then
  echo "abi.h declares ABI $version, which sdk/abi-versions.txt does not list; add: $version $hash" >&2
  exit 1
fi
if [ "$recorded" != "$hash" ]; then
  echo "abi.h changed (sha256 $hash) but still declares ABI $version (recorded as $recorded)." >&2
  echo "Bump CERTCONN_ABI_MINOR (append-only change) or CERTCONN_ABI_MAJOR (anything else) as abi.h's rules say," >&2
  echo "and add the new version's line to sdk/abi-versions.txt." >&2
  exit 1
fi
echo "abi.h matches ABI $version"
