#!/usr/bin/env bash
# Makes the toolchain pinned in rust-toolchain.toml available without a download: when rustup
# has no toolchain of that name but the machine's stable toolchain is that version, link it.
# Sourced by the other scripts.
export PATH="$HOME/.cargo/bin:$PATH"
pinned=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../rust-toolchain.toml")
if [ -n "$pinned" ] && ! rustup run "$pinned" rustc --version >/dev/null 2>&1; then
  stable_version=$(rustup run stable rustc --version 2>/dev/null | awk '{print $2}')
  if [ "$stable_version" = "$pinned" ]; then
    rustup toolchain link "$pinned" "$(rustup run stable rustc --print sysroot)"
  fi
fi
