#!/usr/bin/env bash
# Prepare a Debian 12 (bookworm) machine for dockwall's integration tests.
#
# Installs the stable tools (Docker 20.10 among them) with apt, then unpacks a
# newer Docker engine (28.x or later, from Debian's unstable suite) into
# /opt/dockwall-test/docker28 without installing it, and Docker 29 (built from
# moby's source, ../shared/engines/docker29/) into /opt/dockwall-test/docker29.
# Idempotent; run as root.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: must run as root" >&2
    exit 1
fi

wait_for_apt_lock() {
    local waited=0
    while fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock \
            /var/lib/apt/lists/lock >/dev/null 2>&1; do
        if [ "$waited" -ge 900 ]; then
            echo "setup.sh: apt is still locked after ${waited}s" >&2
            exit 1
        fi
        echo "setup.sh: waiting for another apt/dpkg to finish..."
        sleep 5
        waited=$((waited + 5))
    done
}

stable_packages=(docker.io iptables nftables ipset busybox-static curl iproute2
                 conntrack python3-venv psmisc procps util-linux
                 dbus-daemon dbus-bin systemd
                 mmdebstrap)  # mmdebstrap: the root file system of dockwall's own image (tests)

missing=()
for pkg in "${stable_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    # fuser comes from psmisc, which may itself be missing on a fresh machine.
    if command -v fuser >/dev/null; then wait_for_apt_lock; fi
    export DEBIAN_FRONTEND=noninteractive
    timeout 900 apt-get -o DPkg::Lock::Timeout=600 update
    timeout 1800 apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
        "${missing[@]}"
fi

# The stable docker.io package enables a system dockerd; the tests never use it
# and it must not hold /run/docker.sock or change the host's firewall.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
fi

"$here/docker28.sh"
"$here/docker29.sh"

echo "--- engines ---"
/usr/sbin/dockerd --version
/opt/dockwall-test/docker28/usr/sbin/dockerd --version
/opt/dockwall-test/docker28/usr/bin/containerd --version
/usr/sbin/runc --version | head -n 1
if [ -x /opt/dockwall-test/docker29/dockerd ]; then
    /opt/dockwall-test/docker29/dockerd --version
fi
