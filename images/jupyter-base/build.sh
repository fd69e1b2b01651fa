#!/usr/bin/env bash
# Builds the base runtime image from Debian's packages, with no container registry:
# debootstrap a bookworm root filesystem, install Jupyter's nbconvert and the Python kernel
# into it, and import it as $RUNTIME_MATRIX_IMAGE (default runtime-matrix/jupyter-base:bookworm).
#
# runtime-matrix runs this when a runtime declares it as its `build` script and the image is
# missing. It needs root, debootstrap (installed here if missing) and Debian's package mirror.
set -euo pipefail

image=${RUNTIME_MATRIX_IMAGE:-runtime-matrix/jupyter-base:bookworm}
packages=(jupyter-nbconvert python3-ipykernel python3-nbclient coreutils procps)

if [ "$(id -u)" != 0 ]; then
    echo "building $image needs root (debootstrap and chroot); run as root or build it elsewhere and load it" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null; then
    echo "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The host's mirror: debootstrap does not read deb822 sources by itself.
mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d "${TMPDIR:-/tmp}/runtime-matrix-rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT

echo "debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2
    exit 1
}
rm -f "$root.log"
cp /etc/resolv.conf "$root/etc/resolv.conf"
echo "installing ${packages[*]}"
chroot "$root" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$root" \
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/tmp/* "$root/etc/resolv.conf"

echo "importing $image"
tar -C "$root" -c . | docker import \
    --change 'ENV PYDEVD_DISABLE_FILE_VALIDATION=1' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$image" >/dev/null
echo "built $image"
