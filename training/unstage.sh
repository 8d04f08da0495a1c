#!/usr/bin/env bash
# On the device: join the chunks copied to /root/stage and unpack them; install the wheels.
set -euo pipefail
cd /root/stage
if [ ! -d speechocean762 ]; then cat chunk_* | tar -xf - && rm -f chunk_*; fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /root/site wheels/*.whl
echo "staged: $(ls /root/stage)"
