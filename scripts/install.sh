#!/usr/bin/env bash
# Installs piper-node, piper-launch and their systemd units.
#
#   scripts/install.sh            # system-wide: binaries in $PREFIX/bin, units
#                                 # in $PREFIX/lib/systemd/system, /etc/piper
#   scripts/install.sh --user     # for `systemctl --user`: binaries in
#                                 # ~/.local/bin, units in ~/.config/systemd/user
#
# PREFIX (default /usr/local, or ~/.local with --user) and DESTDIR (a staging
# root, default none) are honoured, so it runs without root into a staging
# dir. UNITDIR and SYSCONFDIR override the unit and config directories.
# PIPER_BIN_DIR takes prebuilt binaries from there instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."

user=no
[[ "${1:-}" == "--user" ]] && user=yes

if [[ $user == yes ]]; then
  PREFIX="${PREFIX:-$HOME/.local}"
  UNITDIR="${UNITDIR:-${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user}"
  SYSCONFDIR="${SYSCONFDIR:-${XDG_CONFIG_HOME:-$HOME/.config}}"
else
  PREFIX="${PREFIX:-/usr/local}"
  UNITDIR="${UNITDIR:-$PREFIX/lib/systemd/system}"
  SYSCONFDIR="${SYSCONFDIR:-/etc}"
fi
DESTDIR="${DESTDIR:-}"

if [[ -z "${PIPER_BIN_DIR:-}" ]]; then
  # Statically linked: an idle node then maps no shared libraries, which
  # keeps its resident memory under 2 MiB (see the README's performance
  # section). An explicit --target keeps the flag off build scripts and
  # proc-macros, which cannot be static.
  host="$(rustc -vV | sed -n 's/^host: //p')"
  RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --quiet --target "$host" -p piper-node -p piper-launch
  PIPER_BIN_DIR="target/$host/release"
fi

install -d "$DESTDIR$PREFIX/bin" "$DESTDIR$PREFIX/share/doc/piper" "$DESTDIR$UNITDIR" "$DESTDIR$SYSCONFDIR/piper"
install -m 0755 "$PIPER_BIN_DIR/piper-node" "$PIPER_BIN_DIR/piper-launch" "$DESTDIR$PREFIX/bin/"
install -m 0644 README.md "$DESTDIR$PREFIX/share/doc/piper/README.md"

# The units name /usr/local, /etc/piper and /run; point them at this
# install. A user manager has no User= to switch to, its runtime directory
# is %t ($XDG_RUNTIME_DIR), and it cannot drop capabilities (it has none to
# drop: CapabilityBoundingSet= fails with 218/CAPABILITIES) or set up an IPC
# namespace. PrivateUsers=yes stays: it is what lets a user manager apply the
# other sandboxing. ProtectHome= becomes read-only, so that the binaries in
# ~/.local/bin stay reachable.
edit=(-e "s|/usr/local/|$PREFIX/|g" -e "s|/etc/piper/|$SYSCONFDIR/piper/|g")
if [[ $user == yes ]]; then
  edit+=(-e '/^User=/d' -e '/^Group=/d' -e '/^SocketUser=/d' -e '/^SocketGroup=/d'
         -e '/^CapabilityBoundingSet=/d' -e '/^AmbientCapabilities=/d' -e '/^PrivateIPC=/d'
         -e 's|^ProtectHome=yes|ProtectHome=read-only|'
         -e '/^WantedBy=multi-user.target/s/multi-user/default/'
         -e 's|/run/|%t/|g')
fi
for unit in piper-node@.service piper-node@.socket piper-launch.service; do
  sed "${edit[@]}" "scripts/systemd/$unit" > "$DESTDIR$UNITDIR/$unit"
  chmod 0644 "$DESTDIR$UNITDIR/$unit"
done
if [[ ! -e "$DESTDIR$SYSCONFDIR/piper/launch.env" ]]; then
  install -m 0644 scripts/systemd/launch.env "$DESTDIR$SYSCONFDIR/piper/launch.env"
fi

ctl="systemctl"
[[ $user == yes ]] && ctl="systemctl --user"
cat <<NEXT
piper installed into ${DESTDIR:-/}: $PREFIX/bin, $UNITDIR, $SYSCONFDIR/piper.
Next steps:
NEXT
if [[ $user == no ]]; then
  echo "  useradd --system --no-create-home --shell /usr/sbin/nologin piper   # once"
fi
cat <<NEXT
  $ctl daemon-reload
  $ctl enable --now piper-node@ping.socket      # ping, started by its first datagram
  $ctl start piper-node@pong.service            # pong, running now
  $PREFIX/bin/piper-node pong --dir $( [[ $user == yes ]] && echo '$XDG_RUNTIME_DIR' || echo /run )/piper --kick ping   # start the chain
  journalctl $( [[ $user == yes ]] && echo '--user ' )-u piper-node@ping -u piper-node@pong -f
  # a whole ring as one service: edit $SYSCONFDIR/piper/launch.env, then
  $ctl start piper-launch.service
NEXT
