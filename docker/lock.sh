#!/usr/bin/env bash
# `make lock`: the images' exact dependencies with their hashes, from pyproject.toml's extras, by uv:
#   docker/requirements-cpu.lock    .[serve,cpu]  (docker/Dockerfile.cpu)
#   docker/requirements-gpu.lock    .[serve,gpu]  (docker/Dockerfile)
#   docker/requirements-build.lock  pyproject's build-system requires: builds the project's wheel in the images
#   docker/requirements-smoke.lock  podman-compose, for docker/build-and-smoke.sh
# Universal locks (markers for every Python >= 3.11 and platform): the CPU image's Python is 3.11, the GPU
# image's is its Ubuntu's (3.12), the stand-in base's Debian's (3.11). Each file holds the hashes of every
# release file of each pinned version; pip installs them with --require-hashes.
#
#   docker/lock.sh [UV]       UV: the uv executable (default: uv on PATH)
#
# The package index is pip's own setting on this machine (read at run time, written nowhere), else PyPI.
set -euo pipefail
UV=${1:-uv}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

pip_setting() { python3 -m pip config get "$1" 2>/dev/null | head -n 1 || true; }
ARGS=(--quiet --generate-hashes --universal --python-version 3.11 --no-annotate --custom-compile-command "make lock")
INDEX=${PIP_INDEX_URL:-$(pip_setting global.index-url)}
[ -n "$INDEX" ] && ARGS+=(--index-url "$INDEX")
CERT=${PIP_CERT:-$(pip_setting global.cert)}
[ -n "$CERT" ] && [ -z "${SSL_CERT_FILE:-}" ] && export SSL_CERT_FILE="$CERT"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
  >"$TMP/build.in"
echo "podman-compose>=1.6" >"$TMP/smoke.in"

"$UV" pip compile "${ARGS[@]}" pyproject.toml --extra serve --extra cpu -o docker/requirements-cpu.lock
"$UV" pip compile "${ARGS[@]}" pyproject.toml --extra serve --extra gpu -o docker/requirements-gpu.lock
"$UV" pip compile "${ARGS[@]}" "$TMP/build.in" -o docker/requirements-build.lock
"$UV" pip compile "${ARGS[@]}" "$TMP/smoke.in" -o docker/requirements-smoke.lock
for lock in docker/requirements-*.lock; do
  echo "$lock: $(grep -c '^[a-z0-9]' "$lock") packages"
done
