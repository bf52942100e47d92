#!/usr/bin/env bash
# The container image, run without a container engine (none runs on the development machines):
# the Dockerfile's build step (its `swift build` line, on this machine's toolchain), then its
# runtime stage emulated in a Debian minbase tree of the release its `FROM debian:SUITE-slim`
# names (what that image is made from), given the runtime stage's packages, read from
# deploy/Dockerfile, and its user; the gateway then
# runs there as the Kubernetes Deployment runs it: uid 10001, the root filesystem read-only, the
# ConfigMap's config (its upstream pointed at a simulator on loopback, its team key a fresh one)
# and the Secret's key file mounted read-only, a writable volume at /var/lib/algogate and /tmp,
# a login's empty environment, `serve --watch 10`. Checked: the image's HEALTHCHECK command,
# /readyz, a pinned call answered by the upstream and then by the cache on the volume, a data
# upload, a SIGHUP reload, the process not dumpable (its environment and memory root's, not
# 10001's), a backup to standard output as the README's `kubectl exec` takes it,
# SIGTERM's clean exit (0) with the SQLite file whole, then the maintenance pod's restore of that
# copy and the gateway serving the restored cache.
# Not part of the test command: it needs root (debootstrap, chroot, mounts), Debian's mirror,
# and a release build (about 10 minutes cold on 2 cores).
#
#   sudo bash Tests/container-runtime.sh [DIR]    # DIR: where the tree goes (/var/tmp/algogate-runtime)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=${1:-/var/tmp/algogate-runtime}
# The runtime stage's release: a tree of its own for each, so a change of release makes a new one.
SUITE=$(sed -n 's/^FROM debian:\([a-z]*\)-slim$/\1/p' deploy/Dockerfile)
[ -n "$SUITE" ] || { echo "no 'FROM debian:SUITE-slim' runtime stage in deploy/Dockerfile; update this script" >&2; exit 1; }
TREE="$DIR/$SUITE"
[ "$(id -u)" -eq 0 ] || { echo "container-runtime.sh needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then echo "127.0.0.1:8080 is taken; the gateway needs it" >&2; exit 1; fi

# The build stage's command, as the Dockerfile runs it.
build=$(grep -o 'swift build -c release --product algogate --static-swift-stdlib' deploy/Dockerfile) \
  || { echo "deploy/Dockerfile's build line changed; update this script" >&2; exit 1; }
echo "== $build"
mkdir -p "$DIR"
$build --scratch-path "$ROOT/.build-static" >"$DIR/build.log" 2>&1 || { tail -30 "$DIR/build.log" >&2; echo "FAIL: the build" >&2; exit 1; }
tail -1 "$DIR/build.log"
BINARY="$ROOT/.build-static/release/algogate"

# The runtime stage's packages: the words after --no-install-recommends in its apt-get line.
packages=$(sed -n "/^FROM debian:$SUITE-slim/,\$p" deploy/Dockerfile | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' \
  | grep -m1 'apt-get install' | sed -e 's/.*--no-install-recommends//' -e 's/&&.*//')
packages=$(echo $packages)
[ -n "$packages" ] || { echo "no apt-get install line in deploy/Dockerfile's runtime stage" >&2; exit 1; }
if [ ! -x "$TREE/bin/bash" ]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  mkdir -p "$DIR"
  debootstrap --variant=minbase "$SUITE" "$TREE" http://deb.debian.org/debian >/dev/null
fi
cp /etc/resolv.conf "$TREE/etc/resolv.conf"
echo "== the runtime stage on debian:$SUITE-slim ($(. "$TREE/etc/os-release" && echo "$PRETTY_NAME")): apt-get install $packages; user 10001"
chroot "$TREE" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null"
chroot "$TREE" /bin/sh -c 'id algogate >/dev/null 2>&1 || useradd --system --uid 10001 --home-dir /var/lib/algogate --shell /usr/sbin/nologin algogate'
install -D -m 0755 "$BINARY" "$TREE/usr/local/bin/algogate"
echo "linked: $(chroot "$TREE" ldd /usr/local/bin/algogate | awk '{print $1}' | grep -v -e linux-vdso -e ld-linux | tr '\n' ' ')"
chroot "$TREE" ldd /usr/local/bin/algogate | grep -q "not found" && { echo "FAIL: a library the binary needs is missing" >&2; exit 1; }

# The Deployment's mounts, around a read-only view of the tree.
WORK=$(mktemp -d /tmp/algogate-runtime.XXXXXX)
VIEW="$WORK/view"
MOUNTS=()
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for mount in "${MOUNTS[@]:-}"; do [ -n "$mount" ] && umount -l "$mount" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$VIEW" "$WORK/config" "$WORK/secret" "$WORK/volume" "$WORK/tmp"
mount --bind "$TREE" "$VIEW" && MOUNTS=("$VIEW") && mount -o remount,bind,ro "$VIEW"
mkdir -p "$TREE/etc/algogate" "$TREE/etc/algogate-secret" "$TREE/var/lib/algogate"
for pair in config:/etc/algogate secret:/etc/algogate-secret volume:/var/lib/algogate tmp:/tmp; do
  mount --bind "$WORK/${pair%%:*}" "$VIEW${pair#*:}" && MOUNTS=("$VIEW${pair#*:}" "${MOUNTS[@]}")
done
mount -o remount,bind,ro "$VIEW/etc/algogate" && mount -o remount,bind,ro "$VIEW/etc/algogate-secret"
mount -t proc proc "$VIEW/proc" && MOUNTS=("$VIEW/proc" "${MOUNTS[@]}")
chown 10001:10001 "$WORK/volume"; chmod 1777 "$WORK/tmp"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
SIM_PORT=$(free_port)
SIM_KEY="sim-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
TEAM_KEY="team-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$BINARY" sim --port "$SIM_PORT" --key "$SIM_KEY" --data-dir "$WORK/sim" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
printf '%s' "$SIM_KEY" >"$WORK/secret/upstream-key"
chmod 0444 "$WORK/secret/upstream-key"
# The ConfigMap's algogate.yaml, its upstream and team key changed for this run.
python3 - "$ROOT/deploy/kubernetes/configmap.yaml" "$WORK/config/algogate.yaml" "http://127.0.0.1:$SIM_PORT" \
  "$(printf '%s' "$TEAM_KEY" | sha256sum | cut -d' ' -f1)" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
config = text.split("algogate.yaml: |\n", 1)[1]
config = "\n".join(line[4:] for line in config.splitlines())
config = config.replace("url: https://api.algorithmia.com", "url: " + sys.argv[3])
config = config.replace('"1111111111111111111111111111111111111111111111111111111111111111"', '"%s"' % sys.argv[4])
config = config.replace("host: 0.0.0.0", "host: 127.0.0.1")
open(sys.argv[2], "w").write(config + "\n")
PY
in_image() { chroot --userspec=10001:10001 "$VIEW" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/algogate "$@"; }

echo "== serve --watch 10 --config /etc/algogate/algogate.yaml, as uid 10001 on a read-only root"
(cd "$VIEW/var/lib/algogate" && exec chroot --userspec=10001:10001 "$VIEW" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin \
  /bin/sh -c 'cd /var/lib/algogate && exec /usr/local/bin/algogate serve --watch 10 --config /etc/algogate/algogate.yaml') >"$WORK/gateway.log" 2>&1 &
GATEWAY=$!
PIDS+=($GATEWAY)
for _ in $(seq 100); do in_image curl -fsS -o /dev/null http://127.0.0.1:8080/healthz 2>/dev/null && break; sleep 0.2; done
check() { if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL: $1: got '$2', expected '$3'" >&2; tail -20 "$WORK/gateway.log" >&2; exit 1; fi; }
check "the HEALTHCHECK command" "$(in_image sh -c 'curl -fsS http://127.0.0.1:8080/healthz >/dev/null && echo healthy || exit 1')" healthy
check "/readyz" "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/readyz)" 200
call() { curl -s -D "$WORK/head" -H "Authorization: Simple $TEAM_KEY" -H 'Content-Type: text/plain' -d "$1" "http://127.0.0.1:8080/v1/algo/demo/Hello/0.1.0" | grep -o '"result":"[^"]*"'; }
cache() { grep -i '^x-cache:' "$WORK/head" | tr -d '\r' | cut -d' ' -f2; }
check "a pinned call, answered by the upstream" "$(call image) $(cache)" '"result":"Hello image" MISS'
check "the same call, answered by the cache on the volume" "$(call image) $(cache)" '"result":"Hello image" HIT'
check "a data directory made" "$(curl -s -H "Authorization: Simple $TEAM_KEY" -H 'Content-Type: application/json' -d '{"name":"team-a"}' "http://127.0.0.1:8080/v1/data/.my")" '{"result":"data://.my/team-a"}'
check "a data upload" "$(curl -s -X PUT -H "Authorization: Simple $TEAM_KEY" --data-binary hi "http://127.0.0.1:8080/v1/data/.my/team-a/x.txt")" '{"result":"data://.my/team-a/x.txt"}'
check "the state file, on the volume, the gateway's" "$(stat -c %u "$WORK/volume/algogate.sqlite")" 10001
kill -HUP "$GATEWAY"   # chroot, env and sh each exec the next: this is the gateway
for _ in $(seq 50); do grep -q "configuration reloaded" "$WORK/gateway.log" && break; sleep 0.1; done
check "a SIGHUP reload" "$(grep -c 'configuration reloaded' "$WORK/gateway.log")" 1
check "not dumpable: its environment and memory root's alone, not uid 10001's (no core file of it)" "$(stat -c %u "/proc/$GATEWAY/environ") $(stat -c %u "/proc/$GATEWAY/mem")" "0 0"
# The README's backup on Kubernetes, as `kubectl exec deploy/algogate -- algogate backup --config
# /etc/algogate/algogate.yaml --to - > algogate.sqlite` runs it: in the container, as its user.
state() {  # state FILE: its integrity check and how many cached answers it holds
  python3 -c 'import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); print(db.execute("pragma integrity_check").fetchone()[0], db.execute("select count(*) from cache_entry").fetchone()[0])' "$1"
}
in_image /usr/local/bin/algogate backup --config /etc/algogate/algogate.yaml --to - >"$WORK/copy.sqlite" 2>"$WORK/backup.log" \
  || { cat "$WORK/backup.log" >&2; echo "FAIL: the backup" >&2; exit 1; }
check "a backup to standard output while serving, as kubectl exec runs it: whole, one cached answer" "$(state "$WORK/copy.sqlite")" "ok 1"
check "a call after the backup, stored" "$(call later) $(cache)" '"result":"Hello later" MISS'
serve_stop() {
  kill -TERM "$GATEWAY"
  status=0; wait "$GATEWAY" || status=$?
  check "SIGTERM: a clean exit" "$status" 0
}
serve_stop
check "the state file whole, two cached answers" "$(state "$WORK/volume/algogate.sqlite")" "ok 2"

# The maintenance pod's restore (deploy/kubernetes/maintenance-pod.yaml), the gateway stopped: the
# copy put in the pod's /tmp (kubectl cp writes it as the container's user), then restore.
install -o 10001 -g 10001 -m 0600 "$WORK/copy.sqlite" "$WORK/tmp/algogate.sqlite"
in_image /usr/local/bin/algogate restore --config /etc/algogate/algogate.yaml --from /tmp/algogate.sqlite --replace >"$WORK/restore.log" 2>&1 \
  || { cat "$WORK/restore.log" >&2; echo "FAIL: the restore" >&2; exit 1; }
check "the restore, as the maintenance pod runs it: the file the copy, owned by 10001" "$(state "$WORK/volume/algogate.sqlite") $(stat -c %u "$WORK/volume/algogate.sqlite")" "ok 1 10001"
(exec chroot --userspec=10001:10001 "$VIEW" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin \
  /usr/local/bin/algogate serve --watch 10 --config /etc/algogate/algogate.yaml) >>"$WORK/gateway.log" 2>&1 &
GATEWAY=$!
PIDS+=($GATEWAY)
for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:8080/healthz 2>/dev/null && break; sleep 0.2; done
check "after the restore, the backed-up answer is a hit" "$(call image) $(cache)" '"result":"Hello image" HIT'
check "and the one stored after the backup is gone" "$(call later) $(cache)" '"result":"Hello later" MISS'
serve_stop
if grep -q -e "$SIM_KEY" -e "$TEAM_KEY" "$WORK/gateway.log" "$WORK/backup.log" "$WORK/restore.log"; then echo "FAIL: a key in a log" >&2; exit 1; fi
echo "== the image's runtime stage runs the gateway, a backup and a restore as the manifests do"
