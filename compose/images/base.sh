#!/usr/bin/env bash
# The Debian base image, made without a registry: `debootstrap --variant=minbase` from the
# Debian mirror this machine's apt already uses, tarred into a cache and `docker import`ed.
#
#   compose/images/base.sh            # prints the tag; imports or builds only what is missing
#
# Order of work, cheapest first: the tag is already in the engine -> nothing to do; the tarball is
# in the cache -> `docker import` (seconds); neither -> debootstrap (minutes, needs root).
# Settings (environment): CFS_BASE_IMAGE (tag, default cfs-base:<suite>), CFS_IMAGE_CACHE (default
# ~/.cache/cfs-images), DEBIAN_MIRROR and DEBIAN_SUITE (default: read from /etc/apt/sources*).
set -euo pipefail

# deb822 (/etc/apt/sources.list.d/*.sources) or one-line (sources.list) entries: the first
# "main" archive, not -security or -updates, is the one debootstrap can build from.
apt_mirror_and_suite() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk '
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i !~ /-/) { suite = $i } }
      /^$/ { if (uri != "" && suite != "") { print uri, suite; exit } uri = ""; suite = "" }
      END { if (uri != "" && suite != "") print uri, suite }
    ' "$f" | head -n1
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk '$1 == "deb" && $3 !~ /-/ { m = $2; if (m ~ /^\[/) { m = $3; s = $4 } else { s = $3 } print m, s; exit }' "$f"
  done
}

read -r detected_mirror detected_suite < <(apt_mirror_and_suite | head -n1) || true
MIRROR=${DEBIAN_MIRROR:-${detected_mirror:-}}
SUITE=${DEBIAN_SUITE:-${detected_suite:-}}
if [ -z "$MIRROR" ] || [ -z "$SUITE" ]; then
  echo "base.sh: no Debian archive in /etc/apt/sources*; set DEBIAN_MIRROR and DEBIAN_SUITE" >&2
  exit 2
fi
TAG=${CFS_BASE_IMAGE:-cfs-base:$SUITE}
CACHE=${CFS_IMAGE_CACHE:-$HOME/.cache/cfs-images}
TARBALL="$CACHE/debian-$SUITE-minbase.tar"

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "$TAG"
  exit 0
fi

if [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null || {
    echo "base.sh: debootstrap is missing (apt-get install debootstrap)" >&2
    exit 2
  }
  [ "$(id -u)" = 0 ] || { echo "base.sh: debootstrap needs root (run with sudo)" >&2; exit 2; }
  mkdir -p "$CACHE"
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root" "$TARBALL.partial"' EXIT
  echo "base.sh: debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)" >&2
  debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >&2
  # The image's apt uses the host's Debian archives (with -updates and -security where the host
  # has them), never the host's other repositories, whose keys the image lacks.
  if [ -z "${DEBIAN_MIRROR:-}" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
    rm -f "$root/etc/apt/sources.list"
  fi
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*.log
  tar --numeric-owner --xattrs -C "$root" -cf "$TARBALL.partial" .
  mv "$TARBALL.partial" "$TARBALL"
fi

docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap --variant=minbase $SUITE" \
  "$TARBALL" "$TAG" >/dev/null
echo "$TAG"
