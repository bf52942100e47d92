#!/usr/bin/env bash
# Runs the README's two commands as on a fresh Debian machine that has the Swift toolchain: a
# Debian 12 (or 13, SUITE=trixie) made with debootstrap (minbase), given only the toolchain's own
# prerequisites, and this commit cloned into it. In it, `bash deploy/demo.sh` must install what it needs, build and
# start the demo, whose banner's lines are then run as printed (every curl line must succeed, the
# first answer 200, and the Python lines answer "Hello HAL"); then `CI=true bash Tests/run.sh`
# must pass. Not part of the test command: it needs root (a chroot, mounts), Debian's mirror and
# PyPI, and about 20 minutes on 2 cores.
#
#   sudo bash Tests/fresh-debian.sh [DIR]     # DIR: where the Debian tree goes (/var/tmp/algogate-fresh)
#   sudo SUITE=trixie bash Tests/fresh-debian.sh DIR   # Debian 13 in place of 12
#
# The tree is kept, so a second run skips debootstrap and builds incrementally; remove DIR for a
# cold run. The toolchain is the one `swift` on PATH belongs to, mounted read-only at the same
# path; so is /opt/swift-packages with /etc/gitconfig when they exist (a machine whose Swift
# packages come from a local mirror). Certificate authorities added to this machine
# (/usr/local/share/ca-certificates, an egress proxy's) are added to the tree's, so pip reaches
# PyPI as it does here. The demo listens on 127.0.0.1:8080 and 9000, which must be free.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=${1:-/var/tmp/algogate-fresh}
TREE="$DIR/root"
SUITE=${SUITE:-bookworm}
case "$SUITE" in
  bookworm) RELEASE="Debian 12"; CXX_DEV=libstdc++-12-dev ;;
  trixie) RELEASE="Debian 13"; CXX_DEV=libstdc++-14-dev ;;
  *) echo "SUITE: bookworm or trixie" >&2; exit 1 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "fresh-debian.sh needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
SWIFT=$(command -v swift) || { echo "no swift on PATH" >&2; exit 1; }
TOOLCHAIN=$(dirname "$(dirname "$(dirname "$(readlink -f "$SWIFT")")")")   # .../usr/bin/swift-driver -> ...
for port in 8080 9000; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "127.0.0.1:$port is taken; the demo needs it" >&2; exit 1; fi
done

if [ ! -x "$TREE/bin/bash" ]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  mkdir -p "$DIR"
  debootstrap --variant=minbase "$SUITE" "$TREE" http://deb.debian.org/debian
fi

MOUNTS=()
bind() {  # bind SOURCE [ro]: SOURCE at the same path inside the tree
  mkdir -p "$TREE$1"
  mount --bind "$1" "$TREE$1"
  [ "${2:-}" != ro ] || mount -o remount,bind,ro "$TREE$1"
  MOUNTS=("$TREE$1" "${MOUNTS[@]}")
}
DEMO_PID=""
cleanup() {
  [ -z "$DEMO_PID" ] || { pkill -INT -f "algogate demo" 2>/dev/null || true; wait "$DEMO_PID" 2>/dev/null || true; }
  for mount in "${MOUNTS[@]}"; do umount -l "$mount" 2>/dev/null || true; done
}
trap cleanup EXIT
mkdir -p "$TREE/proc" && mount -t proc proc "$TREE/proc" && MOUNTS=("$TREE/proc" "${MOUNTS[@]}")
bind /sys; bind /dev; bind /dev/pts
bind "$TOOLCHAIN" ro
if [ -d /opt/swift-packages ]; then bind /opt/swift-packages ro; cp /etc/gitconfig "$TREE/etc/gitconfig"; fi
cp /etc/resolv.conf "$TREE/etc/resolv.conf"
mkdir -p "$TREE/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$TREE/usr/local/share/ca-certificates/" 2>/dev/null || true

# A shell in the tree with a login's environment, not this one's.
inside() {
  chroot "$TREE" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} ${no_proxy:+no_proxy=$no_proxy} \
    PATH="$TOOLCHAIN/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" /bin/bash -c "$1"
}

# The Swift toolchain's prerequisites on Debian 12 (and 13, its C++ library's version aside): a
# linker, gcc, git and the libraries its programs load (read with ldd), with their -dev packages
# as swift.org's Linux guide has them, but libsqlite3-0 rather than libsqlite3-dev (the toolchain
# needs only SQLite's runtime); and ca-certificates for git and pip. Not libsqlite3-dev, curl or
# python3: algogate's commands must install those (zlib1g-dev comes in with libxml2-dev). The
# toolchain built for Debian 12 runs on 13.
inside 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  binutils-gold gcc git libc6-dev libcurl4-openssl-dev libedit-dev libicu-dev libncurses-dev libpython3-dev \
  '"$CXX_DEV"' libxml2-dev libsqlite3-0 pkg-config tzdata uuid-dev ca-certificates >/dev/null && update-ca-certificates >/dev/null'
inside 'swift --version'

rm -rf "$TREE/work/algogate.new"
git clone -q "$ROOT" "$TREE/work/algogate.new"
if [ -d "$TREE/work/algogate/.build" ]; then mv "$TREE/work/algogate/.build" "$TREE/work/algogate.new/.build"; fi
rm -rf "$TREE/work/algogate" && mv "$TREE/work/algogate.new" "$TREE/work/algogate"
echo "== fresh Debian: $(git -C "$TREE/work/algogate" log --oneline -1)"

echo "== bash deploy/demo.sh"
inside 'cd /work/algogate && exec bash deploy/demo.sh' >"$DIR/demo.log" 2>&1 &
DEMO_PID=$!
for _ in $(seq 1800); do
  grep -q "listening on 127.0.0.1:8080" "$DIR/demo.log" && break
  kill -0 "$DEMO_PID" 2>/dev/null || { tail -40 "$DIR/demo.log" >&2; echo "FAIL: the demo stopped" >&2; exit 1; }
  sleep 1
done
grep -q "listening on 127.0.0.1:8080" "$DIR/demo.log" || { echo "FAIL: the demo did not start within 30 minutes" >&2; exit 1; }
grep -E '^  (curl|python3 |ALGORITHMIA_API=)' "$DIR/demo.log" >"$TREE/tmp/banner.sh"
echo "the banner's $(wc -l <"$TREE/tmp/banner.sh") lines, run as printed:"
first=$(inside "$(grep -m1 '^  curl' "$TREE/tmp/banner.sh")" | head -1 | tr -d '\r')
[ "$first" = "HTTP/1.1 200 OK" ] || { echo "FAIL: the demo's first call: $first" >&2; exit 1; }
while IFS= read -r line; do
  out=$(inside "set -e; $line" 2>&1) || { echo "FAIL: $line"$'\n'"$out" >&2; exit 1; }
  line=${line#  }; echo "ok   ${line%%    #*}"$'\n'"       -> $(printf '%s' "$out" | tail -1 | cut -c1-150)"
done <"$TREE/tmp/banner.sh"
[ "$(printf '%s' "$out" | tail -1)" = "Hello HAL" ] || { echo "FAIL: the Python lines did not answer Hello HAL" >&2; exit 1; }
pkill -INT -f "algogate demo"; wait "$DEMO_PID" || true; DEMO_PID=""

echo "== CI=true bash Tests/run.sh"
inside 'cd /work/algogate && CI=true bash Tests/run.sh' >"$DIR/tests.log" 2>&1 || { tail -60 "$DIR/tests.log" >&2; echo "FAIL: the test command, log: $DIR/tests.log" >&2; exit 1; }
grep -E "^✔ Test run with|^ok |^skip " "$DIR/tests.log" | head -5
echo "== both commands worked in a fresh $RELEASE (logs: $DIR/demo.log, $DIR/tests.log)"
