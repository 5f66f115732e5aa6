#!/bin/sh
# Installs what cpm-pf needs on Debian 12 and builds it. Idempotent: a second
# run installs nothing new. Needs root (or sudo) for apt-get.
set -eu
cd "$(dirname "$0")/.."

# Debian packages: Kamailio 5.6 with app_python3 and the modules the bridge
# loads, gRPC for Kamailio's embedded Python, Dovecot (IMAP Message Store for
# tests and the demo), SIPp (tests and the demo), Redis 7.0 (the shared record
# store, session.store "redis": tests and the bench start their own), systemd
# (systemd-analyze checks the unit in ops/systemd).
PKGS="kamailio kamailio-python3-modules kamailio-extra-modules kamailio-utils-modules
python3-grpcio python3-grpc-tools python3-protobuf dovecot-imapd redis-server sip-tester systemd"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup: installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  # Debian starts these services on install where an init system runs; the
  # project starts its own instances, on its own ports.
  $SUDO systemctl disable --now kamailio dovecot redis-server >/dev/null 2>&1 || true
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi
npm run --silent build
echo "setup: ready"
