#!/usr/bin/env bash
# The compose cluster without a registry (make compose-images / compose-up / compose-down).
#
#   compose/cluster.sh images   # base image (cached), host-built wheels, node + HAProxy images
#   compose/cluster.sh up       # images, compose/.env (random secrets if missing), start, wait
#   compose/cluster.sh down     # remove containers and networks; VOLUMES=1 removes volumes too
#
# Environment: the variables docker-compose.yml reads (CFS_IMAGE, HAPROXY_IMAGE,
# CFS_BASE_IMAGE, CFS_PORT, ...; see compose/README.md), COMPOSE_PROJECT_NAME, PYTHON (the
# host Python that builds the wheels, default python3), COMPOSE (default: `docker compose`
# where that plugin exists, else docker-compose).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cd "$here"

compose() {
  if [ -n "${COMPOSE:-}" ]; then
    $COMPOSE "$@"
  elif docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  else
    docker-compose "$@"
  fi
}

# A value from the environment, else from compose/.env (read, never sourced: a password may
# hold shell syntax), else the default.
setting() {
  local name=$1 default=$2 value
  value=${!name:-}
  if [ -z "$value" ] && [ -r .env ]; then
    value=$(sed -n "s/^$name=//p" .env | tail -n1)
  fi
  echo "${value:-$default}"
}

# The base the images start FROM: the debootstrap image (tagged cfs-base:<host's suite>
# unless CFS_BASE_IMAGE names another cfs-base tag), or any other image CFS_BASE_IMAGE names.
base_image() {
  local base
  base=$(setting CFS_BASE_IMAGE "")
  case $base in
    "" | cfs-base:*) base=$(CFS_BASE_IMAGE=$base "$here/images/base.sh") ;;
    *) echo "cluster.sh: base image $base (not built here; pulled by docker build if missing)" >&2 ;;
  esac
  export CFS_BASE_IMAGE=$base
}

# The project's wheel and its dependencies', built on the host so the image build needs no
# package index. The dependencies are resolved again only when pyproject.toml changes (the
# stamp); the project's own wheel is rebuilt every time.
wheels() {
  local python=${PYTHON:-python3} stamp
  stamp=$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)
  rm -rf .build/project
  mkdir -p .build/deps .build/project
  if [ "$(cat .build/deps/.pyproject.sha256 2>/dev/null)" != "$stamp" ]; then
    rm -f .build/deps/*.whl
    "$python" -m pip wheel -q --disable-pip-version-check --wheel-dir .build/deps "$repo[server]"
    rm -f .build/deps/cfs_cluster-*.whl
    echo "$stamp" > .build/deps/.pyproject.sha256
  fi
  "$python" -m pip wheel -q --disable-pip-version-check --no-deps --wheel-dir .build/project "$repo"
}

images() {
  local started=$SECONDS
  base_image
  wheels
  CFS_REVISION=${CFS_REVISION:-$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)}
  export CFS_REVISION
  # cfs2 and cfs3 run cfs1's image: building it once is enough. Compose interpolates the
  # whole file, secrets included, though no build reads them: placeholders when unset.
  CFS_RAFT_PASSWORD=${CFS_RAFT_PASSWORD:-unused-by-the-build} \
    CFS_BOOTSTRAP_ADMIN=${CFS_BOOTSTRAP_ADMIN:-unused:by-the-build} \
    compose build -q cfs1 haproxy
  # The images these tags had before are dangling now: remove those of ours, no others.
  local title
  for title in "cfs_cluster node" "cfs_cluster haproxy"; do
    docker image prune -f --filter "label=org.opencontainers.image.title=$title" >/dev/null
  done
  echo "cluster.sh: images built in $((SECONDS - started)) s" >&2
}

# compose/.env with fresh random secrets, only when there is none: never overwrites yours.
env_file() {
  [ -e .env ] && return
  local python=${PYTHON:-python3}
  (umask 077 && "$python" - <<'PY' > .env
import secrets
print("# Made by compose/cluster.sh from .env.example's keys; keep it secret (mode 600).")
print(f"CFS_RAFT_PASSWORD={secrets.token_urlsafe(32)}")
print(f"CFS_BOOTSTRAP_ADMIN=admin:{secrets.token_urlsafe(18)}")
PY
  )
  echo "cluster.sh: wrote compose/.env with random secrets (the admin password is in it)" >&2
  local project=${COMPOSE_PROJECT_NAME:-$(basename "$here")}
  if [ -n "$(docker volume ls -q --filter "label=com.docker.compose.project=$project")" ]; then
    # The bootstrap administrator applies only while the cluster has no users.
    echo "cluster.sh: WARNING: volumes of project $project exist from an earlier .env: its users" \
      "stay, the new CFS_BOOTSTRAP_ADMIN will not apply. Restore that .env, or remove the" \
      "cluster's state with: make compose-down VOLUMES=1" >&2
  fi
}

wait_ready() {
  local port url
  port=$(setting CFS_PORT 5590)
  url="http://127.0.0.1:$port/readyz"
  "${PYTHON:-python3}" - "$url" <<'PY'
import sys, time, urllib.request
url = sys.argv[1]
deadline = time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                print(f"cluster.sh: ready behind HAProxy at {url.removesuffix('/readyz')}", file=sys.stderr)
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"cluster.sh: {url} not ready after 120 s (docker compose logs)")
    time.sleep(0.5)
PY
}

case ${1:-} in
  images) images ;;
  up)
    env_file
    images
    compose up -d --no-build
    wait_ready
    ;;
  down)
    # Named volumes hold the Raft journals: removed only when asked (VOLUMES=1).
    if [ "${VOLUMES:-0}" != 0 ]; then compose down --remove-orphans --volumes; else compose down --remove-orphans; fi
    ;;
  *)
    echo "usage: $0 images|up|down" >&2
    exit 2
    ;;
esac
