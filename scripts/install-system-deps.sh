#!/usr/bin/env bash
# Installs the Debian packages the test suite drives: Chromium and CJK fonts for the
# browser tests of the HTML report, Dovecot for the IMAP tests.
# Idempotent: apt is not touched when every package is already installed, so CI can
# call this on every run. Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(chromium fonts-noto-cjk dovecot-imapd dovecot-core)

missing=()
for package in "${packages[@]}"; do
    # dpkg-query exits 0 for removed-but-configured packages too; check the status word.
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
    if [[ "$status" != "installed" ]]; then
        missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-system-deps: all installed (${packages[*]})"
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
        echo "install-system-deps: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "install-system-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${packages[@]}"

# Chromium picks fonts through fontconfig; refresh its cache so the new CJK fonts are seen.
if command -v fc-cache >/dev/null; then
    fc-cache -f >/dev/null
fi
