#!/bin/bash
# Build angos_<version>_<arch>.deb from this source tree (the working tree,
# committed or not) into OUTDIR (default: ./dist).
#
#   packaging/deb/build.sh [OUTDIR]
#
# Needs: dpkg-dev, debhelper, dh-virtualenv, python3-venv (`make deb` checks).
# The version comes from angos/__init__.py; debian/changelog is written here
# (dated by the last commit, so two builds of one commit carry the same date).
# Python dependencies come from PyPI only, as pinned with hashes in
# packaging/requirements.txt (see debian/rules).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUTDIR=$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/angos/__init__.py")
[ -n "$VERSION" ] || { echo "build.sh: no __version__ in angos/__init__.py" >&2; exit 1; }
ARCH=$(dpkg --print-architecture)

WORK=$(mktemp -d /tmp/angos-deb.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SRC="$WORK/angos-$VERSION"
mkdir -p "$SRC"

# Only what the package is made of; never the dev venv, caches or test data.
tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    -cf - angos setup.cfg pyproject.toml README.md docs systemd packaging/requirements.txt \
    packaging/build-requirements.txt packaging/deb/config.toml packaging/deb/job-queue-configured \
    | tar -C "$SRC" -xf -
cp -r "$ROOT/packaging/deb/debian" "$SRC/debian"

if WHEN=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null); then :; else WHEN=$(date +%s); fi
cat > "$SRC/debian/changelog" <<CHANGELOG
angos ($VERSION) bookworm; urgency=medium

  * Package angos $VERSION (see the project's git history for changes).

 -- Angos maintainers <maintainers@angos.invalid>  $(date -u -R -d "@$WHEN")
CHANGELOG

(cd "$SRC" && dpkg-buildpackage -b -us -uc)
DEB="angos_${VERSION}_${ARCH}.deb"
mv "$WORK/$DEB" "$OUTDIR/$DEB"
echo "$OUTDIR/$DEB"
