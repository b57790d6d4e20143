#!/usr/bin/env bash
# Installs what mxlab needs on a fresh Debian 12 machine: Postfix (without a system instance),
# nftables, iproute2 and dig. Idempotent; run as root. Rust (>= 1.95) must already be installed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string sut.sender.test" | debconf-set-selections
need=()
for pkg in postfix nftables iproute2 dnsutils; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
