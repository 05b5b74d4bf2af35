#!/usr/bin/env bash
# Seeds fuzz/corpus/decode and fuzz/corpus/decode_split (both gitignored) with the recorded
# Asterisk captures. Captures over 8 KiB are cut into 8 KiB pieces: small seeds keep
# libFuzzer's input size limit (the largest seed) small, and so executions fast.
# Run from anywhere; expects ../shared beside the repository.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fixtures="$here/../../shared/fixtures/asterisk-22.10.1"
piece=8192
if [[ ! -d "$fixtures" ]]; then
    echo "seed-corpus: no fixtures at $fixtures" >&2
    exit 1
fi
for target in decode decode_split; do
    dir="$here/corpus/$target"
    mkdir -p "$dir"
    for f in "$fixtures"/*.raw "$fixtures"/*.sent; do
        name="$(basename "$f")"
        if [[ "$(wc -c <"$f")" -le "$piece" ]]; then
            cp "$f" "$dir/$name"
        else
            split -b "$piece" -d -a 3 "$f" "$dir/$name."
        fi
    done
done
echo "seeded $(find "$here/corpus/decode" -type f | wc -l) files into $here/corpus/decode and decode_split"
