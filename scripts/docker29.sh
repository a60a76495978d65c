#!/usr/bin/env bash
# Unpack the Docker 29 engine built from moby's source (dockerd, docker-proxy,
# runc-notime; see its README) from ../shared/engines/docker29/ beside this
# repository into /opt/dockwall-test/docker29, once, after checking the
# archive's sha256. It runs with the containerd of the Docker 28 packages
# (docker28.sh). Without the archive it says so and leaves the Docker 29 tests
# to skip (or, with CI=true, fail). Idempotent; run as root.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
archive_dir=$repo/../shared/engines/docker29
archive=$archive_dir/docker29.7.2-linux-amd64.tar.xz
sha256=ff16561154fc97de578f4332cee5cb49311c1597a85faaba5e39aad81791d291  # its README's
dest=/opt/dockwall-test/docker29
stamp=$dest/.dockwall-unpacked

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sha256" ] && [ -x "$dest/dockerd" ]; then
    echo "docker29.sh: already unpacked: $dest (archive sha256 $sha256)"
    exit 0
fi
if [ ! -f "$archive" ]; then
    echo "docker29.sh: no Docker 29 engine at $archive: the Docker 29 tests will skip" \
         "(fail with CI=true); put the archive and its README there and run setup.sh again" >&2
    exit 0
fi
if ! grep -q "$sha256" "$archive_dir/README.md"; then
    echo "docker29.sh: $archive_dir/README.md does not list sha256 $sha256" >&2
    exit 1
fi
actual=$(sha256sum "$archive" | awk '{ print $1 }')
if [ "$actual" != "$sha256" ]; then
    echo "docker29.sh: $archive has sha256 $actual, expected $sha256" >&2
    exit 1
fi

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
tar -xJf "$archive" -C "$dest.tmp" --no-same-owner
for file in dockerd docker-proxy runc-notime; do
    if [ ! -x "$dest.tmp/$file" ]; then
        echo "docker29.sh: the archive has no executable $file" >&2
        exit 1
    fi
done
echo "$sha256" > "$dest.tmp/.dockwall-unpacked"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "docker29.sh: unpacked into $dest: $("$dest/dockerd" --version)"
