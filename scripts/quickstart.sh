#!/usr/bin/env bash
# Install peekbot into .venv and start the local demo: a tiny random model answers (randomly) about a sample
# screenshot, streamed to the terminal. No GPU, no download. Pass your own question/image to change it.
#   bash scripts/quickstart.sh sandbox   # the same bot in a browser, against an embedded Slack (peekbot sandbox)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/peekbot ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet torch==2.13.0   # CPU wheel first; drop this line on a GPU host to get CUDA torch
    .venv/bin/pip install --quiet -e ".[dev]"
fi

if [ "${1:-}" = "sandbox" ]; then
    shift
    exec .venv/bin/peekbot sandbox --demo "$@"
fi

image="${PEEKBOT_DEMO_IMAGE:-}"
if [ -z "$image" ]; then
    image=".peekbot/sample-error.png"
    .venv/bin/python scripts/sample_screenshot.py "$image"
fi
question="${*:-What does this error mean?}"
exec .venv/bin/peekbot chat --demo --image "$image" "$question"
