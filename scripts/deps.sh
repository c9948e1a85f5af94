#!/usr/bin/env bash
# Installs what building and booting Mica needs on a Debian machine, idempotently:
#   - the x86_64-unknown-none Rust target (kernel and user programs);
#   - GRUB's BIOS and UEFI (x86_64-efi) platforms, xorriso and mtools: grub-mkrescue
#     builds one hybrid ISO that boots under both;
#   - OVMF, the UEFI firmware for QEMU (`--firmware uefi`);
#   - QEMU >= 8.1 (Debian 12's own 7.2 has no x2APIC under TCG, so on Debian 12 we
#     take qemu-system-x86 from bookworm-backports, which gives QEMU 10).
# Anything already present is skipped; nothing is downloaded outside the package
# registries.
set -euo pipefail

say() { printf 'deps: %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

# --- Rust target -----------------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx 'x86_64-unknown-none'; then
  say "adding Rust target x86_64-unknown-none"
  rustup target add x86_64-unknown-none
fi
if ! rustup component list --installed 2>/dev/null | grep -q '^rustfmt'; then
  say "adding rustfmt"
  rustup component add rustfmt || say "rustfmt unavailable (formatting check skipped)"
fi
if ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then
  say "adding clippy"
  rustup component add clippy || say "clippy unavailable"
fi

# --- QEMU version check ------------------------------------------------------------
qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null 2>&1 || return 1
  local v
  v=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n1)
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 8 ] || { [ "$1" -eq 8 ] && [ "$2" -ge 1 ]; }
}

need_pkgs=()
for tool in grub-mkrescue:grub-common xorriso:xorriso mformat:mtools; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_pkgs+=("${tool##*:}")
done
[ -d /usr/lib/grub/i386-pc ] || need_pkgs+=(grub-pc-bin)
[ -d /usr/lib/grub/x86_64-efi ] || need_pkgs+=(grub-efi-amd64-bin)
# The firmware pairs the runner looks for (src/qemu.rs OVMF_PAIRS, Debian's).
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -f /usr/share/OVMF/OVMF_CODE.fd ] || need_pkgs+=(ovmf)

if [ ${#need_pkgs[@]} -eq 0 ] && qemu_ok; then
  say "all tools present ($(qemu-system-x86_64 --version | head -n1))"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")

if ! qemu_ok && [ "$codename" = "bookworm" ]; then
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    say "enabling the bookworm-backports suite (QEMU 10)"
    $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
fi

say "apt-get update"
$SUDO apt-get update -qq

if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! qemu_ok; then
  if [ "$codename" = "bookworm" ]; then
    say "installing qemu-system-x86 from bookworm-backports"
    $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
  else
    say "installing qemu-system-x86"
    $SUDO apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
  fi
fi

qemu_ok || { say "error: QEMU >= 8.1 is required but $(qemu-system-x86_64 --version 2>/dev/null | head -n1 || echo 'none') is installed"; exit 1; }
say "ready: $(qemu-system-x86_64 --version | head -n1)"
