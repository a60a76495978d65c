#!/usr/bin/env bash
# Unpack a Docker engine >= 28 from Debian's unstable suite into
# /opt/dockwall-test/docker28, without installing it and without touching the
# machine's own apt lists. The stable runc (/usr/sbin/runc) is used with it:
# the unstable one needs a newer libc. Idempotent; run as root.
set -euo pipefail

base=/opt/dockwall-test
dest=$base/docker28
aptdir=$base/apt
stamp=$dest/.dockwall-unpacked

if [ -f "$stamp" ] && [ -x "$dest/usr/sbin/dockerd" ]; then
    echo "docker28.sh: already unpacked: $(cat "$stamp")"
    exit 0
fi

mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/etc/sources.list.d" \
         "$aptdir/etc/preferences.d" "$aptdir/debs"
: > "$aptdir/etc/sources.list"

# Derive a sid sources file from the machine's own: keep the stanzas of the main
# archive (not debian-security), with the suite replaced by sid.
src=/etc/apt/sources.list.d/debian.sources
out=$aptdir/etc/sources.list.d/sid.sources
if [ -f "$src" ]; then
    awk '
        BEGIN { RS = ""; ORS = "\n\n" }
        /URIs:[^\n]*debian-security/ { next }
        /URIs:[^\n]*\/debian\/?($|[ \n])/ {
            n = split($0, lines, "\n"); stanza = ""
            for (i = 1; i <= n; i++) {
                line = lines[i]
                if (line ~ /^#/) continue
                if (line ~ /^Suites:/) line = "Suites: sid"
                if (line ~ /^Components:/) line = "Components: main"
                stanza = stanza line "\n"
            }
            printf "%s\n", stanza; found = 1; exit
        }
        END { if (!found) exit 1 }
    ' "$src" > "$out"
else
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: sid\nComponents: main\n%s\n' \
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' > "$out"
fi
echo "docker28.sh: using sources:"
cat "$out"

apt_opts=(
    -o "Dir::Etc::SourceList=$aptdir/etc/sources.list"
    -o "Dir::Etc::SourceParts=$aptdir/etc/sources.list.d"
    -o "Dir::Etc::PreferencesParts=$aptdir/etc/preferences.d"
    -o "Dir::State::Lists=$aptdir/lists"
    -o "Dir::Cache=$aptdir/cache"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "APT::Get::List-Cleanup=0"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root"
)

timeout 900 apt-get "${apt_opts[@]}" update
version=$(apt-cache "${apt_opts[@]}" show docker.io 2>/dev/null \
          | awk '/^Version:/ { print $2 }' | sort -V | tail -n 1)
if [ -z "$version" ]; then
    echo "docker28.sh: the unstable suite has no docker.io package" >&2
    exit 1
fi
upstream=${version#*:}
major=${upstream%%.*}
if [ "$major" -lt 28 ]; then
    echo "docker28.sh: unstable serves docker.io $version, need 28 or newer" >&2
    exit 1
fi
echo "docker28.sh: unstable serves docker.io $version"

rm -f "$aptdir/debs"/*.deb
(cd "$aptdir/debs" && timeout 900 apt-get "${apt_opts[@]}" download docker.io containerd)

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
for deb in "$aptdir/debs"/*.deb; do
    dpkg -x "$deb" "$dest.tmp"
    dpkg-deb -f "$deb" Package Version | tr '\n' ' ' >> "$dest.tmp/.dockwall-unpacked"
    echo >> "$dest.tmp/.dockwall-unpacked"
done
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "docker28.sh: unpacked into $dest:"
cat "$stamp"
