#!/usr/bin/env bash
# Builds the Debian packages with dpkg-deb, in target/deb:
# - piper_VERSION_ARCH.deb: the local tools, piper-node and piper-launch
#   (static binaries), their units (with /usr/bin paths, installed but not
#   enabled), sysusers.d/piper.conf (installing creates the user piper),
#   man pages, shell completions, the README, the licences, a changelog;
# - piper-bridge_VERSION_ARCH.deb: piper-bridge, which carries a ring
#   across hosts through an MQTT broker, with its unit, man page and
#   completions. A package of its own: its TLS and runtime libraries stay
#   out of a machine that runs only local rings.
# It prints the two paths, one a line.
#
#   scripts/package.sh            # builds everything it needs
#   PIPER_BIN_DIR=... PIPER_DIST_DIR=... scripts/package.sh   # prebuilt
set -euo pipefail
cd "$(dirname "$0")/.."

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
arch="$(dpkg --print-architecture)"
# The changelog's date: the commit's, so that a rebuild is the same.
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
all="target/deb/stage"
rm -rf "$all" target/deb/piper_"${version}"_"$arch" target/deb/piper-bridge_"${version}"_"$arch"
mkdir -p "$all"

PREFIX=/usr DESTDIR="$all" UNITDIR=/usr/lib/systemd/system SYSCONFDIR=/etc SYSUSERSDIR=/usr/lib/sysusers.d \
  scripts/install.sh >/dev/null
# Debian ships binaries stripped (the release build keeps line tables for
# backtraces; the source tree has them), and man pages compressed.
if command -v strip >/dev/null; then
  strip --strip-unneeded "$all/usr/bin/"piper-*
fi
gzip -9n "$all/usr/share/man/man1/"*.1

# The bridge's files move to a stage of their own.
bridge="target/deb/piper-bridge_${version}_${arch}"
for file in usr/bin/piper-bridge usr/share/man/man1/piper-bridge.1.gz \
  usr/share/bash-completion/completions/piper-bridge usr/share/zsh/vendor-completions/_piper-bridge \
  usr/share/fish/vendor_completions.d/piper-bridge.fish usr/lib/systemd/system/piper-bridge.service \
  etc/piper/bridge.env; do
  install -d "$bridge/$(dirname "$file")"
  mv "$all/$file" "$bridge/$file"
done
local="target/deb/piper_${version}_${arch}"
mv "$all" "$local"

# Debian's layout: the licence as copyright, and a changelog, in each.
changelog() {
  printf '%s (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- piper developers <piper@localhost>  %s\n' \
    "$1" "$version" "$version" "$(date -u -R -d "@$epoch")" | gzip -9n > "$2/changelog.Debian.gz"
}
rm "$local/usr/share/doc/piper/LICENSE-MIT" "$local/usr/share/doc/piper/LICENSE-APACHE"
install -d "$bridge/usr/share/doc/piper-bridge"
for package in piper piper-bridge; do
  stage="$local"
  [[ $package == piper-bridge ]] && stage="$bridge"
  cat LICENSE-MIT LICENSE-APACHE > "$stage/usr/share/doc/$package/copyright"
  changelog "$package" "$stage/usr/share/doc/$package"
done

control() { # package stage depends description...
  local package="$1" stage="$2" depends="$3"
  shift 3
  install -d "$stage/DEBIAN"
  cat > "$stage/DEBIAN/control" <<CONTROL
Package: $package
Version: $version
Architecture: $arch
Maintainer: piper developers <piper@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Section: net
Priority: optional
${depends}Recommends: systemd
Description: $*
CONTROL
}
control piper "$local" "" "message passing between local processes over Unix datagram sockets
 piper-node runs one named node per process: it prints every datagram it
 receives and answers with its own name, byte-compatible with the well-known
 Python piper example. piper-launch runs a ring of them, restarts what dies,
 and tears it down cleanly. Units for systemd (socket activation, sd_notify,
 watchdog) are installed but not enabled. piper-bridge, which carries a ring
 across hosts, is the package piper-bridge."
control piper-bridge "$bridge" "Depends: piper (= $version), libc6
" "carries a piper ring across hosts through an MQTT broker
 piper-bridge stands in for the nodes of other hosts in a piper socket
 directory, and forwards their datagrams through an MQTT broker (such as
 mosquitto), with TLS and logins. Its unit is installed but not enabled."

echo /etc/piper/launch.env > "$local/DEBIAN/conffiles"
echo /etc/piper/bridge.env > "$bridge/DEBIAN/conffiles"
cat > "$local/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  systemd-sysusers piper.conf || true
  if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
SCRIPT
cat > "$bridge/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SCRIPT
# Nothing of piper stays running or enabled once it is gone.
prerm() { # stage units...
  local stage="$1"
  shift
  cat > "$stage/DEBIAN/prerm" <<SCRIPT
#!/bin/sh
set -e
if [ "\$1" = remove ]; then
  if [ -d /run/systemd/system ]; then
    systemctl stop $* || true
  fi
  for unit in $*; do
    for link in /etc/systemd/system/*.wants/\$unit; do
      if [ -L "\$link" ]; then systemctl disable "\${link##*/}" 2>/dev/null || rm -f "\$link"; fi
    done
  done
fi
SCRIPT
}
prerm "$local" "'piper-launch.service'" "'piper-node@*.socket'" "'piper-node@*.service'"
prerm "$bridge" "'piper-bridge.service'"
for stage in "$local" "$bridge"; do
  cat > "$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SCRIPT
  chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
  dpkg-deb --root-owner-group --build "$stage" "$stage.deb" >/dev/null
  echo "$stage.deb"
done
