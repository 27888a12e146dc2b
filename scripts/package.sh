#!/usr/bin/env bash
# Builds the Debian package target/deb/piper_VERSION_ARCH.deb with dpkg-deb:
# the two static binaries, the units (with /usr/bin paths, installed but not
# enabled), sysusers.d/piper.conf (installing creates the user piper), the
# man pages, the shell completions, the README and the licences.
#
#   scripts/package.sh            # builds everything it needs
#   PIPER_BIN_DIR=... PIPER_DIST_DIR=... scripts/package.sh   # prebuilt
set -euo pipefail
cd "$(dirname "$0")/.."

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
arch="$(dpkg --print-architecture)"
stage="target/deb/piper_${version}_${arch}"
rm -rf "$stage"
mkdir -p "$stage"

PIPER_NO_BRIDGE=1 PREFIX=/usr DESTDIR="$stage" UNITDIR=/usr/lib/systemd/system SYSCONFDIR=/etc SYSUSERSDIR=/usr/lib/sysusers.d \
  scripts/install.sh >/dev/null
# Debian ships binaries stripped (the release build keeps line tables for
# backtraces; the source tree has them).
if command -v strip >/dev/null; then
  strip --strip-unneeded "$stage/usr/bin/piper-node" "$stage/usr/bin/piper-launch"
fi
# Debian's layout: compressed man pages, the licence as copyright.
gzip -9n "$stage/usr/share/man/man1/"*.1
cp LICENSE-MIT "$stage/usr/share/doc/piper/copyright"
cat LICENSE-APACHE >> "$stage/usr/share/doc/piper/copyright"
rm "$stage/usr/share/doc/piper/LICENSE-MIT" "$stage/usr/share/doc/piper/LICENSE-APACHE"

install -d "$stage/DEBIAN"
size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: piper
Version: $version
Architecture: $arch
Maintainer: piper developers <piper@localhost>
Installed-Size: $size
Section: net
Priority: optional
Recommends: systemd
Homepage: file:///usr/share/doc/piper/README.md
Description: message passing between local processes over Unix datagram sockets
 piper-node runs one named node per process: it prints every datagram it
 receives and answers with its own name, byte-compatible with the well-known
 Python piper example. piper-launch runs a ring of them, restarts what dies,
 and tears it down cleanly. Units for systemd (socket activation, sd_notify,
 watchdog) are installed but not enabled.
CONTROL
echo /etc/piper/launch.env > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  systemd-sysusers piper.conf || true
  if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
SCRIPT
cat > "$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
# Nothing of piper stays running or enabled once it is gone.
if [ "$1" = remove ]; then
  if [ -d /run/systemd/system ]; then
    systemctl stop 'piper-launch.service' 'piper-node@*.socket' 'piper-node@*.service' || true
  fi
  for link in /etc/systemd/system/*.wants/piper-node@*.* /etc/systemd/system/*.wants/piper-launch.service; do
    if [ -L "$link" ]; then systemctl disable "${link##*/}" 2>/dev/null || rm -f "$link"; fi
  done
fi
SCRIPT
cat > "$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SCRIPT
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
dpkg-deb --root-owner-group --build "$stage" "target/deb/piper_${version}_${arch}.deb" >/dev/null
echo "target/deb/piper_${version}_${arch}.deb"
