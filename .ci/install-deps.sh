#!/usr/bin/env bash
# Installs what mxlab needs on a fresh Debian 12 machine: Postfix (without a system instance),
# nftables, iproute2, dig, swaks, libfaketime (the accelerated world clock: MTAs run their stock
# timers x100 under LD_PRELOAD), tshark (the pcap recorder's test reads its captures back with
# it; not setuid: the tests run as root), and Chromium (run headless by tests/matrix_html.rs to
# render the HTML matrix; about 400 MB; its dependencies bring a font), and for the driver
# files Sendmail (unpacked) and chasquid. Idempotent; run as root.
# Rust (>= 1.95) must already be installed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string sut.sender.test" | debconf-set-selections
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
need=()
for pkg in postfix nftables iproute2 dnsutils swaks chromium libfaketime tshark; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# uidmap (the setuid newuidmap and newgidmap): rootless mode, mxlab and its tests run by an
# ordinary user with /etc/subuid and /etc/subgid entries, root only in a user namespace of its
# own (harness/src/rootless.rs).
dpkg-query -W -f='${Status}' uidmap 2>/dev/null | grep -q "install ok installed" || {
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends uidmap
}

# Exim 4.96 and OpenSMTPD 6.8 next to Postfix. Their Debian packages conflict with postfix
# (mail-transport-agent), so they are downloaded and unpacked (no maintainer scripts run) under
# /opt/mxlab/{exim,opensmtpd}; mxlab runs them as private instances (harness/src/sut/exim.rs,
# opensmtpd.rs).
MXLAB_OPT=/opt/mxlab
need=()
for pkg in libgnutls-dane0 libidn12 libevent-2.1-7 libpcre2-8-0 libnsl2 libpam0g libdb5.3 util-linux; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
unpack() { # unpack PACKAGE DIR: apt-get download + dpkg-deb -x, once per package version
  local pkg=$1 dir=$2 version
  version=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    apt-get update -qq
    version=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
  fi
  if [ "$(cat "$dir/.mxlab-$pkg" 2>/dev/null)" = "$version" ]; then
    return 0
  fi
  local tmp
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  if getent passwd _apt >/dev/null; then chown _apt "$tmp"; fi
  (cd "$tmp" && apt-get download -q "$pkg=$version" >/dev/null)
  mkdir -p "$dir"
  dpkg-deb -x "$tmp"/"${pkg}"_*.deb "$dir"
  rm -rf "$tmp"
  echo "$version" > "$dir/.mxlab-$pkg"
}
mkdir -p "$MXLAB_OPT"
chmod 755 "$MXLAB_OPT"
unpack exim4-daemon-light "$MXLAB_OPT/exim"
unpack opensmtpd "$MXLAB_OPT/opensmtpd"

# Sendmail 8.17 for drivers/sendmail.toml: sendmail-bin conflicts with postfix too, so it is
# unpacked the same way (with sendmail-base and sendmail-cf: the m4 files its sendmail.cf is
# generated from) under /opt/mxlab/sendmail; m4 and perl for its config and queue listing.
# chasquid (Go) for drivers/chasquid.toml is an ordinary package that does not conflict; its
# system service is not needed (policy-rc.d above keeps it from starting); the driver injects
# with swaks over STARTTLS using a certificate made by openssl.
need=()
for pkg in m4 perl openssl chasquid gcc libc6-dev libwrap0 liblockfile1 libnet-ssleay-perl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
unpack sendmail-bin "$MXLAB_OPT/sendmail"
unpack sendmail-base "$MXLAB_OPT/sendmail"
unpack sendmail-cf "$MXLAB_OPT/sendmail"
# The private sendmail copy is setgid smmsp/mail: the loader ignores LD_PRELOAD for a setgid
# exec (AT_SECURE), so libfaketime would not load and Sendmail would run on the real clock.
# Nothing here needs the group (the instance runs as root with its queue in the work directory).
chmod g-s "$MXLAB_OPT/sendmail/usr/libexec/sendmail/sendmail"
# Sendmail's event timer waits from signal-handler context, where libfaketime leaves the wait
# unscaled: drivers/faketime-wait.c scales select/nanosleep by the faketime rate; the driver
# preloads it before libfaketime. Rebuilt each time (idempotent, a few milliseconds).
install -d -m 755 "$MXLAB_OPT/lib"
gcc -O2 -Wall -shared -fPIC -o "$MXLAB_OPT/lib/faketime-wait.so" \
  "$(dirname "$0")/../drivers/faketime-wait.c"

# Exim: the Debian-exim user, and the instance directory. Exim trusts `-C FILE` in the
# daemon's re-execs (which run as Debian-exim) only for paths listed in the compiled-in
# /etc/exim4/trusted_configs. Each run's generated config lives in its own work directory, so
# the driver bind-mounts that work directory, inside the MTA's private mount namespace, over one
# fixed, root-owned, empty placeholder directory, /opt/mxlab/exim/instance; its exim.conf is the
# one path listed here, once. (No per-run entries, no rebuilt Exim, no -C restriction relaxed.)
install -d -m 750 /var/spool/exim4
getent passwd Debian-exim >/dev/null ||
  adduser --system --group --no-create-home --disabled-login --home /var/spool/exim4 \
    --force-badname Debian-exim >/dev/null
install -d -m 755 -o root -g root /etc/exim4 "$MXLAB_OPT/exim/instance"
touch /etc/exim4/trusted_configs
chown root:root /etc/exim4/trusted_configs
chmod 644 /etc/exim4/trusted_configs
grep -qxF "$MXLAB_OPT/exim/instance/exim.conf" /etc/exim4/trusted_configs ||
  echo "$MXLAB_OPT/exim/instance/exim.conf" >> /etc/exim4/trusted_configs

# OpenSMTPD: its users and compiled-in directories (private directories are bind-mounted over
# /var/spool/smtpd and /run per instance by the driver).
install -d -m 755 -o root -g root /var/lib/opensmtpd/empty
getent group opensmtpq >/dev/null || addgroup --system opensmtpq >/dev/null
getent passwd opensmtpd >/dev/null ||
  adduser --system --group --no-create-home --disabled-login --home /var/lib/opensmtpd/empty \
    opensmtpd >/dev/null
getent passwd opensmtpq >/dev/null ||
  adduser --system --ingroup opensmtpq --no-create-home --disabled-login \
    --home /var/lib/opensmtpd/empty opensmtpq >/dev/null
install -d -m 711 -o root -g root /var/spool/smtpd
chgrp opensmtpq "$MXLAB_OPT/opensmtpd/usr/sbin/smtpctl"
chmod 2755 "$MXLAB_OPT/opensmtpd/usr/sbin/smtpctl"

# Haraka 3 (Node.js, from npm) for the driver file drivers/haraka.toml: installed under
# /opt/mxlab/haraka, a version pinned, once. Needs Node.js >= 20 and npm (installed from Debian
# if missing; Debian 12's nodejs is 18, too old: then install Node 20 yourself and rerun).
# Without Haraka, tests/driver.rs is reported as ignored even under MXLAB_REQUIRE_ALL=1: CI on a
# stock Debian 12 does not run it.
HARAKA_VERSION=3.3.4
HARAKA_DIR="$MXLAB_OPT/haraka"
if [ "$(cat "$HARAKA_DIR/.mxlab-haraka" 2>/dev/null)" != "$HARAKA_VERSION" ] ||
  [ ! -e "$HARAKA_DIR/lib/node_modules/Haraka/bin/haraka" ]; then
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$node_major" -lt 20 ]; then
    echo "install-deps: Haraka $HARAKA_VERSION needs Node.js >= 20 (found $(node --version)); skipping Haraka" >&2
  else
    npm install -g --prefix "$HARAKA_DIR" --no-fund --no-audit --loglevel=error "Haraka@$HARAKA_VERSION"
    echo "$HARAKA_VERSION" > "$HARAKA_DIR/.mxlab-haraka"
  fi
fi
