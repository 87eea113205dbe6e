#!/usr/bin/env bash
# The demo model's training text: the King James Bible (public domain) from Debian's bible-kjv package.
# Usage: bash scripts/demo-model/get_text.sh OUT.txt
set -euo pipefail
out=${1:?usage: get_text.sh OUT.txt}
if ! command -v bible >/dev/null; then
  apt-get update -qq && apt-get install -y -qq bible-kjv >/dev/null
fi
bible "Gen1:1-Rev22:21" >"$out"
echo "wrote $out ($(wc -c <"$out") bytes)"
