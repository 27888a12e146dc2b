#!/usr/bin/env bash
# Installs piper-node, piper-launch and piper-bridge, their man pages, shell
# completions, systemd units and sysusers.d entry. PIPER_NO_BRIDGE=1 leaves
# the bridge out (the Debian package holds the local tools only).
#
#   scripts/install.sh            # system-wide: binaries in $PREFIX/bin, units
#                                 # in $PREFIX/lib/systemd/system, /etc/piper
#   scripts/install.sh --user     # for `systemctl --user`: binaries in
#                                 # ~/.local/bin, units in ~/.config/systemd/user
#
# PREFIX (default /usr/local, or ~/.local with --user) and DESTDIR (a staging
# root, default none) are honoured, so it runs without root into a staging
# dir. UNITDIR, SYSCONFDIR and SYSUSERSDIR override the unit, config and
# sysusers.d directories. PIPER_BIN_DIR takes prebuilt binaries from there,
# and PIPER_DIST_DIR prebuilt man pages and completions (`cargo xtask dist
# DIR`), instead of building them.
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
  # systemd-sysusers reads /usr/lib and /etc, never /usr/local.
  if [[ $PREFIX == /usr ]]; then
    SYSUSERSDIR="${SYSUSERSDIR:-/usr/lib/sysusers.d}"
  else
    SYSUSERSDIR="${SYSUSERSDIR:-$SYSCONFDIR/sysusers.d}"
  fi
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
  if [[ -z "${PIPER_NO_BRIDGE:-}" ]]; then
    # Dynamically linked: it resolves the broker's host name through NSS.
    cargo build --release --quiet -p piper-bridge
    cp target/release/piper-bridge "$PIPER_BIN_DIR/"
  fi
fi
programs=(piper-node piper-launch)
units=(piper-node@.service piper-node@.socket piper-launch.service)
if [[ -z "${PIPER_NO_BRIDGE:-}" ]]; then
  programs+=(piper-bridge)
  units+=(piper-bridge.service)
fi
if [[ -z "${PIPER_DIST_DIR:-}" ]]; then
  PIPER_DIST_DIR="target/dist"
  cargo xtask dist "$PIPER_DIST_DIR" >/dev/null
fi

share="$DESTDIR$PREFIX/share"
install -d "$DESTDIR$PREFIX/bin" "$share/doc/piper" "$share/man/man1" "$DESTDIR$UNITDIR" "$DESTDIR$SYSCONFDIR/piper" \
  "$share/bash-completion/completions" "$share/zsh/vendor-completions" "$share/fish/vendor_completions.d"
for program in "${programs[@]}"; do
  install -m 0755 "$PIPER_BIN_DIR/$program" "$DESTDIR$PREFIX/bin/"
done
install -m 0644 README.md LICENSE-MIT LICENSE-APACHE "$share/doc/piper/"
for program in "${programs[@]}"; do
  install -m 0644 "$PIPER_DIST_DIR/man/man1/$program.1" "$share/man/man1/"
  install -m 0644 "$PIPER_DIST_DIR/completions/bash/$program" "$share/bash-completion/completions/"
  install -m 0644 "$PIPER_DIST_DIR/completions/zsh/_$program" "$share/zsh/vendor-completions/"
  install -m 0644 "$PIPER_DIST_DIR/completions/fish/$program.fish" "$share/fish/vendor_completions.d/"
done
# piper-launch ctl has a page of its own, as git's subcommands do.
install -m 0644 "$PIPER_DIST_DIR/man/man1/piper-launch-ctl.1" "$share/man/man1/"

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
for unit in "${units[@]}"; do
  sed "${edit[@]}" "scripts/systemd/$unit" > "$DESTDIR$UNITDIR/$unit"
  chmod 0644 "$DESTDIR$UNITDIR/$unit"
done
for env in launch.env bridge.env; do
  [[ $env == bridge.env && -n "${PIPER_NO_BRIDGE:-}" ]] && continue
  if [[ ! -e "$DESTDIR$SYSCONFDIR/piper/$env" ]]; then
    install -m 0644 "scripts/systemd/$env" "$DESTDIR$SYSCONFDIR/piper/$env"
  fi
done
if [[ $user == no ]]; then
  install -d "$DESTDIR$SYSUSERSDIR"
  install -m 0644 scripts/sysusers.d/piper.conf "$DESTDIR$SYSUSERSDIR/piper.conf"
fi

ctl="systemctl"
[[ $user == yes ]] && ctl="systemctl --user"
cat <<NEXT
piper installed into ${DESTDIR:-/}: $PREFIX/bin, $UNITDIR, $SYSCONFDIR/piper.
Next steps:
NEXT
if [[ $user == no ]]; then
  echo "  systemd-sysusers                              # creates the user piper ($SYSUSERSDIR/piper.conf)"
fi
cat <<NEXT
  $ctl daemon-reload
  $ctl enable --now piper-node@ping.socket      # ping, started by its first datagram
  $ctl start piper-node@pong.service            # pong, running now
  piper-node pong --dir $( [[ $user == yes ]] && echo '$XDG_RUNTIME_DIR' || echo /run )/piper --kick ping   # start the chain
  journalctl $( [[ $user == yes ]] && echo '--user ' )-u piper-node@ping -u piper-node@pong -f
  # a whole ring as one service: edit $SYSCONFDIR/piper/launch.env, then
  $ctl start piper-launch.service
NEXT
