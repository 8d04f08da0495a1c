#!/usr/bin/env bash
# On the device: join the chunks copied to /root/stage, unpack, install the wheels into
# /root/site (add it to PYTHONPATH) and assemble apa-mini into /root/cache.
set -euo pipefail
cd /root/stage
if [ ! -d speechocean762 ]; then cat chunk_* | tar -xf - && rm -f chunk_*; fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /root/site wheels/*.whl
echo "staged: $(ls /root/stage)"
