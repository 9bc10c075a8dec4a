#!/usr/bin/env bash
# Builds both serving images with Podman and proves the CPU one serves: as a container and as the compose
# service. Run from anywhere: `make image`, or tests/test_deployment.py.
#
#   docker/build-and-smoke.sh [--photo FACE.jpg] [--out DIR] [--no-gpu-image] [--keep-cache]
#
# No Docker engine and no container registry here (see README, Deployment): the images are built on a
# local stand-in base (Debian bookworm by debootstrap, Python 3.11 from Debian), passed through the
# Dockerfiles' base-image build arguments. The stand-in is kept between runs (podman image
# localhost/facerecon-standin:bookworm); everything else this script starts or builds (containers, images,
# build layers, the compose project's network) is removed at the end, also on failure or interruption.
# --keep-cache keeps the build layers for a faster next build.
#
# Exit status: 0 all checks passed; 77 Podman is missing and cannot be installed (not root or no
# apt-get): nothing was checked; anything else: a check or a step failed (the line before says which).
#
# Mirror and index hosts are never written anywhere: the Debian mirror is read from this machine's apt
# sources, pip's settings (index, CA bundle) from its pip configuration, at run time; both are mounted into
# the build read-only and stay out of the images.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STANDIN=localhost/facerecon-standin:bookworm
GRACE_S=40             # docker-compose.yml's stop_grace_period
RUN_ID="facerecon-smoke-$$-$(date +%s)"
PHOTO=""
OUT=""
GPU_IMAGE=1
KEEP_CACHE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --photo) PHOTO=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-gpu-image) GPU_IMAGE=0; shift ;;
    --keep-cache) KEEP_CACHE=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }
passed() { printf 'ok: %s\n' "$*"; SUMMARY+=("$*"); }
SUMMARY=()
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# --- tools ---------------------------------------------------------------------------------------------------
NEEDED=(podman runc debootstrap)
missing() { for tool in "${NEEDED[@]}"; do command -v "$tool" >/dev/null 2>&1 || echo "$tool"; done; }
if [ -n "$(missing)" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "SKIP: $(missing | tr '\n' ' ')missing, and they cannot be installed here (needs root and apt-get)" >&2
    exit 77
  fi
  say "installing Podman from Debian's packages (apt-get): podman runc containernetworking-plugins iptables debootstrap"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         podman runc containernetworking-plugins iptables debootstrap uidmap >/dev/null; }; then
    echo "SKIP: apt-get could not install Podman" >&2
    exit 77
  fi
fi

WORK=$(mktemp -d /tmp/facerecon-smoke.XXXXXX)
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"

# A private containers.conf (CONTAINERS_CONF), /etc untouched: runc (crun refuses this VM's hybrid cgroups),
# and ulimits within what root may set here (no CAP_SYS_RESOURCE: Podman's default nofile fails).
NOFILE=$(ulimit -Hn)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$NOFILE:$NOFILE", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$WORK/containers.conf"
mkdir -p "$WORK/tmp"
export TMPDIR="$WORK/tmp"  # Podman's and buildah's temporary files, removed with $WORK

# --- clean-up, also on failure ---------------------------------------------------------------------------------
IMAGES_BEFORE=$(podman images -a -q --no-trunc | sort -u)
CONTAINERS_BEFORE=$(podman ps -a --external -q --no-trunc | sort -u)  # --external: buildah's build containers too
CONTAINERS=()
COMPOSE_UP=0
cleanup() {
  local status=$?
  set +e
  for name in "${CONTAINERS[@]}"; do podman rm -f -t 0 "$name" >/dev/null 2>&1; done
  if [ "$COMPOSE_UP" = 1 ]; then compose down -t 0 >/dev/null 2>&1; fi
  for id in $(podman ps -a -q --filter "label=io.podman.compose.project=$RUN_ID"); do podman rm -f -t 0 "$id" >/dev/null 2>&1; done
  # anything else that appeared during this run, e.g. the build container of an interrupted build
  for id in $(comm -13 <(echo "$CONTAINERS_BEFORE") <(podman ps -a --external -q --no-trunc | sort -u)); do
    podman rm -f -t 0 "$id" >/dev/null 2>&1
  done
  podman network rm -f "${RUN_ID}_default" >/dev/null 2>&1
  podman pod rm -f "pod_$RUN_ID" >/dev/null 2>&1
  for tag in "${TAGS[@]}"; do podman rmi -f "$tag" >/dev/null 2>&1; done
  if [ "$KEEP_CACHE" = 0 ]; then
    # every image (intermediate layers included) that appeared during this run, newest first; never the stand-in
    local keep
    keep=$(podman images -q --no-trunc "$STANDIN" 2>/dev/null)
    for id in $(comm -13 <(echo "$IMAGES_BEFORE") <(podman images -a -q --no-trunc | sort -u)); do
      [ "$id" = "$keep" ] || podman rmi -f "$id" >/dev/null 2>&1
    done
  fi
  # an interrupted debootstrap may leave /proc or /sys mounted in its root: unmount, never delete across mounts
  awk -v root="$WORK/rootfs/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r \
    | while read -r mount; do umount -l "$mount"; done
  rm -rf --one-file-system "$WORK"
  exit "$status"
}
TAGS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the stand-in base image (kept between runs) ---------------------------------------------------------------
debian_mirror() {
  # The first bookworm source of this machine's apt configuration (deb822 .sources or one-line lists).
  local found="" file
  for file in /etc/apt/sources.list.d/*.sources; do
    if [ ! -f "$file" ] || [ -n "$found" ]; then continue; fi
    found=$(awk 'BEGIN { RS = ""; FS = "\n" }
                 /Suites:[^\n]*bookworm( |$|\n)/ && !/Enabled: *no/ {
                   for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { split($i, u, " "); print u[2]; exit } }' "$file")
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    if [ ! -f "$file" ] || [ -n "$found" ]; then continue; fi
    found=$(awk '$1 == "deb" && / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' "$file")
  done
  echo "$found"
}

if podman image exists "$STANDIN"; then
  say "stand-in base $STANDIN: kept from an earlier run"
else
  MIRROR=$(debian_mirror)
  [ -n "$MIRROR" ] || fail "no Debian bookworm source in /etc/apt/sources.list(.d): cannot debootstrap the stand-in base"
  say "making the stand-in base image with debootstrap (Debian bookworm, Debian's Python 3.11; about a minute)"
  started=$(now)
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
  # caches, documentation and the mirror's name out; apt sources come from the host when a build needs them
  rm -rf "$WORK/rootfs"/var/cache/apt/* "$WORK/rootfs"/var/lib/apt/lists/* "$WORK/rootfs"/usr/share/doc/* \
         "$WORK/rootfs"/usr/share/man/* "$WORK/rootfs"/usr/share/info/* "$WORK/rootfs"/var/log/* \
         "$WORK/rootfs"/etc/apt/sources.list "$WORK/rootfs"/var/cache/debconf/*-old
  tar -C "$WORK/rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$STANDIN" >/dev/null 2>&1
  rm -rf "$WORK/rootfs"
  passed "stand-in base $STANDIN made in $(since "$started") s ($(podman image inspect --format '{{.Size}}' "$STANDIN" | awk '{printf "%.0f MB", $1/1e6}'))"
fi

# --- build settings, read from this machine at run time, mounted read-only into the builds only -------------------
mkdir -p "$WORK/build"
pip_setting() { python3 -m pip config get "$1" 2>/dev/null | head -n 1 || true; }
CA_BUNDLE=${PIP_CERT:-$(pip_setting global.cert)}
[ -n "$CA_BUNDLE" ] || [ ! -f /etc/ssl/certs/ca-certificates.crt ] || CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
INDEX=${PIP_INDEX_URL:-$(pip_setting global.index-url)}
{
  echo "[global]"
  [ -n "$CA_BUNDLE" ] && echo "cert = /run/facerecon-build/ca-certificates.crt"
  case "$INDEX" in http*) echo "index-url = $INDEX" ;; esac
} >"$WORK/build/pip.conf"
BUILD_MOUNTS=(-v "$WORK/build/pip.conf:/etc/pip.conf:ro")
[ -n "$CA_BUNDLE" ] && BUILD_MOUNTS+=(-v "$CA_BUNDLE:/run/facerecon-build/ca-certificates.crt:ro")
# The GPU Dockerfile's apt-get runs on the stand-in (Debian): this machine's apt sources and settings.
APT_MOUNTS=()
for path in /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/apt.conf.d; do
  [ -e "$path" ] && APT_MOUNTS+=(-v "$path:$path:ro")
done

build_image() {  # DOCKERFILE TAG BUILD_ARG [MOUNTS...]
  local dockerfile=$1 tag=$2 build_arg=$3 started
  shift 3
  started=$(now)
  TAGS+=("$tag")
  if ! podman build --format docker --pull=never --build-arg "$build_arg" "${BUILD_MOUNTS[@]}" "$@" \
       -f "$REPO/$dockerfile" -t "$tag" "$REPO" >"$WORK/build-$(basename "$dockerfile").log" 2>&1; then
    tail -n 30 "$WORK/build-$(basename "$dockerfile").log" >&2
    fail "podman build of $dockerfile"
  fi
  BUILD_S=$(since "$started")
  IMAGE_MB=$(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f", $1/1e6}')
}

# --- the checks of a running container -----------------------------------------------------------------------------
check_running() {  # NAME URL OUT_DIR LABEL [MAX_IN_FLIGHT]
  local name=$1 url=$2 dir=$3 label=$4 limit=${5:-} line uid written forbidden
  # shellcheck disable=SC2086  # limit: no argument when empty
  if ! python3 "$REPO/docker/smoke.py" serve "$url" "$PHOTO" "$dir" $limit >"$WORK/smoke.out" 2>&1; then
    cat "$WORK/smoke.out" >&2
    podman logs --tail 20 "$name" >&2
    fail "$label: HTTP checks"
  fi
  while IFS= read -r line; do passed "$label: ${line#ok: }"; done <"$WORK/smoke.out"
  uid=$(podman exec "$name" id -u)
  [ "$uid" != 0 ] || fail "$label: runs as root"
  passed "$label: runs as user $uid, not root"
  [ "$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$name")" = true ] || fail "$label: root not read-only"
  written=$(podman exec "$name" python3 -c "open('/opt/venv/probe', 'w')" 2>&1 || true)
  case "$written" in *"Read-only file system"*) ;; *) fail "$label: /opt/venv writable: $written" ;; esac
  passed "$label: read-only root file system (a write into /opt/venv: Read-only file system)"
  forbidden=$(podman exec "$name" python3 -c "import importlib.util as u
print(' '.join(m for m in ('training', 'model.nn', 'torch', 'pip', 'setuptools') if u.find_spec(m)))")
  [ -z "$forbidden" ] || fail "$label: the image carries $forbidden"
  passed "$label: no training code, torch, pip or setuptools in the image"
  podman healthcheck run "$name" >/dev/null 2>&1 || fail "$label: HEALTHCHECK failed"
  passed "$label: HEALTHCHECK passes (podman healthcheck run)"
}

check_clean_stop() {  # NAME LABEL STARTED (the stop command ran from STARTED to now)
  local name=$1 label=$2 took code
  took=$(since "$3")
  code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
  [ "$code" = 0 ] || fail "$label: exit status $code after stop (137: killed at the end of the grace period)"
  python3 -c "import sys; sys.exit(float(sys.argv[1]) >= float(sys.argv[2]))" "$took" "$GRACE_S" \
    || fail "$label: stop took $took s, the grace period is $GRACE_S s"
  grep -q "Application shutdown complete" <<<"$(podman logs "$name" 2>&1)" || fail "$label: no clean application shutdown"
  passed "$label: SIGTERM -> clean stop in $took s (exit 0, application shutdown complete; grace $GRACE_S s)"
}

if [ -z "$PHOTO" ]; then
  PHOTO="${FACERECON_SHARED_DATA:-$REPO/../shared/data}/eval/aflw2000-3d-dev/images/image00050.jpg"
  if [ ! -f "$PHOTO" ] && [ -x "$REPO/.venv/bin/python" ]; then  # a render of the template face (the tests' photo)
    PHOTO="$WORK/face.jpg"
    (cd "$REPO" && .venv/bin/python -c "import sys; from PIL import Image; from tests.conftest import rendered_face
Image.fromarray(rendered_face()[0]).save(sys.argv[1], quality=92)" "$PHOTO") || PHOTO=""
  fi
  [ -f "$PHOTO" ] || fail "no face photo: pass --photo FACE.jpg (or provide ../shared/data, or make test's .venv)"
fi

# --- CPU image: build, then the container ------------------------------------------------------------------------------
CPU_TAG="localhost/$RUN_ID:cpu"
say "building docker/Dockerfile.cpu on the stand-in base (PYTHON_IMAGE=$STANDIN)"
build_image docker/Dockerfile.cpu "$CPU_TAG" "PYTHON_IMAGE=$STANDIN"
CPU_BUILD_S=$BUILD_S
passed "CPU image built in $BUILD_S s: $IMAGE_MB MB (stand-in base $(podman image inspect --format '{{.Size}}' "$STANDIN" | awk '{printf "%.0f", $1/1e6}') MB)"
grep -q /readyz <<<"$(podman image inspect --format '{{json .Config.Healthcheck}}' "$CPU_TAG")" \
  || fail "no HEALTHCHECK in the image (built without --format docker?)"

say "running the CPU image on loopback (read-only root, tmpfs /tmp)"
NAME="$RUN_ID-cpu"
PORT=$(python3 "$REPO/docker/smoke.py" port)
CONTAINERS+=("$NAME")
podman run -d --name "$NAME" --read-only --tmpfs /tmp -p "127.0.0.1:$PORT:8000" "$CPU_TAG" >/dev/null 2>"$WORK/run.err" \
  || { cat "$WORK/run.err" >&2; fail "podman run"; }
check_running "$NAME" "http://127.0.0.1:$PORT" "$OUT/container" "container"
started=$(now)
podman stop -t "$GRACE_S" "$NAME" >/dev/null 2>&1 || fail "container: podman stop"
check_clean_stop "$NAME" "container" "$started"
podman rm -f "$NAME" >/dev/null 2>&1

# --- the compose file's CPU service, with podman-compose ------------------------------------------------------------
LOCK="$REPO/docker/requirements-smoke.lock"
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/facerecon/podman-compose-$(sha256sum "$LOCK" | cut -c1-12)"
if [ ! -x "$TOOLS/bin/podman-compose" ]; then
  say "installing podman-compose (docker/requirements-smoke.lock) into $TOOLS"
  rm -rf "$TOOLS"
  if ! { python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install --quiet --require-hashes -r "$LOCK"; }; then
    rm -rf "$TOOLS"
    fail "installing podman-compose"
  fi
fi
CPORT=$(python3 "$REPO/docker/smoke.py" port)
compose() {
  FACERECON_CPU_IMAGE="$CPU_TAG" FACERECON_CPU_PUBLISH="127.0.0.1:$CPORT" \
    "$TOOLS/bin/podman-compose" -p "$RUN_ID" -f "$REPO/docker-compose.yml" --profile cpu "$@"
}
say "bringing the compose service facerecon-cpu up (podman-compose $("$TOOLS/bin/podman-compose" --version 2>/dev/null | awk '/podman-compose/ {print $NF}'))"
COMPOSE_UP=1
compose up -d --no-build facerecon-cpu >"$WORK/compose-up.log" 2>&1 || { cat "$WORK/compose-up.log" >&2; fail "compose up"; }
CNAME=$(podman ps -a --filter "label=io.podman.compose.project=$RUN_ID" --format '{{.Names}}' | head -n 1)
[ -n "$CNAME" ] || fail "compose: no container"
IN_FLIGHT=$("$TOOLS/bin/python" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['x-service']['environment']['FACERECON_MAX_IN_FLIGHT'])" \
  "$REPO/docker-compose.yml")
check_running "$CNAME" "http://127.0.0.1:$CPORT" "$OUT/compose" "compose" "$IN_FLIGHT"
started=$(now)
compose --verbose stop facerecon-cpu >"$WORK/compose-stop.log" 2>&1 \
  || { cat "$WORK/compose-stop.log" >&2; fail "compose stop"; }
check_clean_stop "$CNAME" "compose" "$started"
grep -q -- "stop -t $GRACE_S $CNAME" "$WORK/compose-stop.log" \
  || { grep "stop" "$WORK/compose-stop.log" >&2; fail "compose: stop_grace_period ($GRACE_S s) not passed to podman stop"; }
passed "compose: stop_grace_period honoured (podman-compose ran podman stop -t $GRACE_S)"
compose down >"$WORK/compose-down.log" 2>&1 || { cat "$WORK/compose-down.log" >&2; fail "compose down"; }
COMPOSE_UP=0
[ -z "$(podman ps -a -q --filter "label=io.podman.compose.project=$RUN_ID")" ] || fail "compose down left containers"
passed "compose: down removed its containers"

# --- GPU image: its steps on the stand-in base; what needs CUDA only where a GPU is present ---------------------------
if [ "$GPU_IMAGE" = 1 ]; then
  GPU_TAG="localhost/$RUN_ID:gpu"
  say "building docker/Dockerfile on the stand-in base (CUDA_IMAGE=$STANDIN; checks its steps, not CUDA)"
  build_image docker/Dockerfile "$GPU_TAG" "CUDA_IMAGE=$STANDIN" "${APT_MOUNTS[@]}"
  GPU_BUILD_S=$BUILD_S
  passed "GPU image's steps built on the stand-in in $BUILD_S s: $IMAGE_MB MB (onnxruntime-gpu, without CUDA)"

  # The misconfiguration of the issue: onnxruntime-gpu, FACERECON_DEVICE=cuda (the image's default), no usable GPU.
  NAME="$RUN_ID-gpu-cuda"
  CONTAINERS+=("$NAME")
  podman run -d --name "$NAME" --read-only --tmpfs /tmp "$GPU_TAG" >/dev/null 2>&1 || fail "podman run (GPU image)"
  code=$(timeout 120 podman wait "$NAME" 2>/dev/null || echo timeout)
  log=$(podman logs "$NAME" 2>&1)
  [ "$code" != timeout ] || fail "GPU image, device=cuda, no GPU: still running after 120 s (it must refuse to start)"
  [ "$code" != 0 ] || fail "GPU image, device=cuda, no GPU: exited 0"
  grep -q "could not create CUDAExecutionProvider" <<<"$log" || { echo "$log" | tail -n 20 >&2
    fail "GPU image, device=cuda, no GPU: no reason given"; }
  passed "GPU image, FACERECON_DEVICE=cuda without a GPU: start-up fails (exit $code) saying it could not create CUDAExecutionProvider"
  podman rm -f "$NAME" >/dev/null 2>&1

  NAME="$RUN_ID-gpu-auto"
  PORT=$(python3 "$REPO/docker/smoke.py" port)
  CONTAINERS+=("$NAME")
  podman run -d --name "$NAME" --read-only --tmpfs /tmp -e FACERECON_DEVICE=auto -p "127.0.0.1:$PORT:8000" "$GPU_TAG" \
    >/dev/null 2>&1 || fail "podman run (GPU image, auto)"
  providers=$(python3 "$REPO/docker/smoke.py" wait "http://127.0.0.1:$PORT" 120) \
    || { podman logs --tail 20 "$NAME" >&2; fail "GPU image, device=auto: not ready"; }
  [ "$providers" = '["CPUExecutionProvider"]' ] || fail "GPU image, device=auto: /readyz names $providers"
  grep '"level": "warning"' <<<"$(podman logs "$NAME" 2>&1)" | grep -q "CUDAExecutionProvider" \
    || fail "GPU image, device=auto: no warning about the CUDA provider"
  check_running "$NAME" "http://127.0.0.1:$PORT" "$OUT/gpu-image-on-cpu" "GPU image, device=auto"
  passed "GPU image, FACERECON_DEVICE=auto without a GPU: a warning, then ready on $providers"
  podman rm -f -t "$GRACE_S" "$NAME" >/dev/null 2>&1

  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    CUDA_BASE=$(sed -n 's/^ARG CUDA_IMAGE=//p' "$REPO/docker/Dockerfile")
    if podman image exists "$CUDA_BASE"; then
      say "a GPU is present: building docker/Dockerfile on $CUDA_BASE and serving on CUDA"
      build_image docker/Dockerfile "localhost/$RUN_ID:gpu-cuda" "CUDA_IMAGE=$CUDA_BASE"
      NAME="$RUN_ID-gpu"
      PORT=$(python3 "$REPO/docker/smoke.py" port)
      CONTAINERS+=("$NAME")
      podman run -d --name "$NAME" --device nvidia.com/gpu=all --read-only --tmpfs /tmp -p "127.0.0.1:$PORT:8000" \
        "localhost/$RUN_ID:gpu-cuda" >/dev/null 2>&1 || fail "podman run --device nvidia.com/gpu=all"
      check_running "$NAME" "http://127.0.0.1:$PORT" "$OUT/gpu" "GPU image on CUDA"
      grep -q '"CUDAExecutionProvider"' <<<"$(python3 "$REPO/docker/smoke.py" wait "http://127.0.0.1:$PORT")" \
        || fail "GPU image on CUDA: /readyz does not name CUDAExecutionProvider"
      passed "GPU image on CUDA: ready on CUDAExecutionProvider"
    else
      CUDA_NOTE="not checked: a GPU is present, but the CUDA base image $CUDA_BASE is not on this machine (no registry)"
    fi
  else
    CUDA_NOTE="not checked: no GPU on this machine (the GPU image ran on the stand-in base, without CUDA)"
  fi
else
  CUDA_NOTE="not checked: --no-gpu-image"
fi

echo
echo "facerecon images: ${#SUMMARY[@]} checks passed"
printf '  %s\n' "${SUMMARY[@]}"
echo "  CUDA: ${CUDA_NOTE:-checked}"
echo "  build times: CPU image ${CPU_BUILD_S} s, GPU image ${GPU_BUILD_S:-(not built)}${GPU_BUILD_S:+ s}"
{ printf '%s\n' "${SUMMARY[@]}"; echo "CUDA: ${CUDA_NOTE:-checked}"; } >"$OUT/checks.txt"
