#!/usr/bin/env bash
# The systemd units (deploy/systemd), run by systemd: this machine's own Debian booted in a
# container (systemd-nspawn, its root an overlay of / whose writes go to a tmpfs, a network of
# its own), the gateway installed there as the README (Operating it, systemd) installs it
# (the binary in /usr/local/bin, config/algogate.yaml as /etc/algogate/algogate.yaml with its
# upstream pointed at a simulator and its team key a fresh one, the key in upstream.env, the
# three units), then `systemctl enable --now algogate algogate-backup.timer`. Checked: the
# sandbox in force (a dynamic user, no capabilities, no new privileges, a read-only root, /proc
# hiding other users' processes, a user namespace, the system-call filter), the metrics,
# /readyz, a pinned call answered by the upstream and then by the cache, a data upload, a burst
# of requests each with its line in the journal (past journald's rate limit, which the unit raises), the
# state file the dynamic user's and no one else's, the journal's lines of the gateway all JSON
# and keyless, `systemctl reload` (a good config taken, a bad one refused while the old one
# serves; one sent by SIGHUP alone refused by the gateway, its status saying so; under systemd
# 253 and later, the README's Type=notify-reload drop-in waiting for the reload), a kill -9
# restarted by Restart=on-failure with the cache kept, the backup service's copy and the
# restore its comment gives, `systemctl stop`'s clean exit, HTTPS with the certificate and key
# handed over as credentials by the README's drop-in, and the watchdog.
#
#   sudo bash Tests/systemd-runtime.sh        # BINARY=path to test another build (.build/debug/algogate)
#
# The test command runs it where it can: as root, with systemd installed (the container boots
# the machine's own), and systemd-nspawn (Debian's systemd-container, installed when missing).
# Anywhere else it says why it is skipped and exits 0.
#
# BASE=DIR boots another Debian tree instead of this machine's root (beneath the same overlay),
# for another release's systemd; with the static release build, which needs no Swift runtime:
#   sudo debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,python3,util-linux,libsqlite3-0,openssl trixie DIR
#   sudo BASE=DIR BINARY=.build-static/release/algogate bash Tests/systemd-runtime.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
skip() { echo "== systemd-runtime.sh skipped: $*"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "it needs root (it boots a container)"
BASE=${BASE:-/}
[ -x "$BASE/lib/systemd/systemd" ] || skip "no systemd in $BASE to boot in a container"
if ! command -v systemd-nspawn >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd-container >/dev/null 2>&1 \
    || skip "systemd-nspawn (Debian's systemd-container) could not be installed"
fi
BINARY=${BINARY:-$ROOT/.build/debug/algogate}
[ -x "$BINARY" ] || swift build --product algogate >/dev/null
echo "== systemd-runtime.sh: the units run by systemd $(chroot "$BASE" /lib/systemd/systemd --version | awk 'NR == 1 { print $2 }'), in a container of $([ "$BASE" = / ] && echo "this machine's own Debian" || echo "$BASE")"

WORK=$(mktemp -d /var/tmp/algogate-systemd.XXXXXX)
TREE="$WORK/root"
NSPAWN=""
cleanup() {
  if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
    [ -n "${LEADER:-}" ] && kill -s SIGRTMIN+4 "$LEADER" 2>/dev/null   # systemd's poweroff
    for _ in $(seq 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$NSPAWN" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  umount "$TREE" 2>/dev/null || umount -l "$TREE" 2>/dev/null || true
  umount "$WORK/rw" 2>/dev/null || umount -l "$WORK/rw" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# The machine's root (or BASE), read-only beneath an overlay whose writes go to a tmpfs.
mkdir -p "$WORK/rw" "$TREE"
mount -t tmpfs -o size=4g,mode=0755 tmpfs "$WORK/rw"
mkdir -p "$WORK/rw/upper" "$WORK/rw/work"
mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$WORK/rw/upper,workdir=$WORK/rw/work" "$TREE" \
  || skip "an overlay of $BASE could not be mounted"

# Installing with systemd, as the README does it (the binary built by the test command).
install -m 0755 "$BINARY" "$TREE/usr/local/bin/algogate"
if chroot "$TREE" ldd /usr/local/bin/algogate | grep -q "not found"; then
  skip "the build's libraries are not on the root filesystem ($(chroot "$TREE" ldd /usr/local/bin/algogate | grep -m1 'not found'))"
fi
SIM_KEY="sim-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
TEAM_KEY="team-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
TEAM_HASH=$(printf '%s' "$TEAM_KEY" | sha256sum | cut -d' ' -f1)
install -d -m 0755 "$TREE/etc/algogate"
sed -e 's#url: https://api.algorithmia.com #url: http://127.0.0.1:9000        #' \
    -e "s/\"0000000000000000000000000000000000000000000000000000000000000000\"/\"$TEAM_HASH\"/" \
    config/algogate.yaml >"$TREE/etc/algogate/algogate.yaml"
grep -q "url: http://127.0.0.1:9000" "$TREE/etc/algogate/algogate.yaml" && grep -q "$TEAM_HASH" "$TREE/etc/algogate/algogate.yaml" \
  || { echo "FAIL: config/algogate.yaml's upstream.url or its client's key_sha256 changed; update this script" >&2; exit 1; }
install -m 0600 /dev/null "$TREE/etc/algogate/upstream.env"
printf 'ALGOGATE_UPSTREAM_KEY=%s\n' "$SIM_KEY" >"$TREE/etc/algogate/upstream.env"
install -m 0644 deploy/systemd/algogate.service deploy/systemd/algogate-backup.service deploy/systemd/algogate-backup.timer \
  "$TREE/etc/systemd/system/"
# A low rate limit for journald, so that a burst of a few thousand lines would pass it.
mkdir -p "$TREE/etc/systemd/journald.conf.d"
printf '[Journal]\nRateLimitIntervalSec=30s\nRateLimitBurst=100\n' >"$TREE/etc/systemd/journald.conf.d/rate-limit.conf"

# Boot: basic.target, so that none of the machine's own services (a database, a web server)
# start; CAP_SYS_RESOURCE, which nspawn withholds, so that systemd sets the units' limits as on
# a host; the unified cgroup hierarchy alone (cgroup v2), as on a Debian 12 host, where there is
# one: a unit's own journal rate limit needs it.
awk '$3 == "cgroup2" { found = 1 } END { exit !found }' /proc/mounts && export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
systemd-nspawn --quiet --register=no --keep-unit --private-network --capability=CAP_SYS_RESOURCE \
  -D "$TREE" -b --console=read-only systemd.unit=basic.target >"$WORK/boot.log" 2>&1 &
NSPAWN=$!
LEADER=""
for _ in $(seq 100); do
  LEADER=$(pgrep -P "$NSPAWN" -x systemd || true)
  [ -n "$LEADER" ] && break
  kill -0 "$NSPAWN" 2>/dev/null || break
  sleep 0.1
done
[ -n "$LEADER" ] || { cat "$WORK/boot.log" >&2; skip "systemd-nspawn could not boot a container here"; }
box() { nsenter --target "$LEADER" --all env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin "$@"; }
state=""
for _ in $(seq 300); do   # until its bus answers, then until the boot has ended
  state=$(timeout 60 nsenter --target "$LEADER" --all systemctl is-system-running --wait 2>/dev/null || true)
  case "$state" in running|degraded|maintenance|stopping) break;; esac
  sleep 0.2
done
case "$state" in running|degraded) ;; *) tail -20 "$WORK/boot.log" >&2; skip "the container's systemd did not come up (${state:-no answer})";; esac

check() { if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL: $1: got '$2', expected '$3'" >&2; box journalctl --no-pager -n 30 -u algogate -u algogate-backup >&2 || true; exit 1; fi; }
box systemd-run --quiet --unit=algogate-sim -p DynamicUser=yes -p StateDirectory=algogate-sim \
  /usr/local/bin/algogate sim --port 9000 --key "$SIM_KEY" --data-dir /var/lib/algogate-sim
box systemctl daemon-reload
box systemctl enable --quiet --now algogate algogate-backup.timer
up() { for _ in $(seq 100); do box curl -fsS -o /dev/null http://127.0.0.1:8080/healthz 2>/dev/null && return 0; sleep 0.1; done; return 1; }
check "systemctl enable --now algogate: active" "$(box systemctl is-active algogate)" active
check "it returned once the gateway served (Type=notify): the first request answered" \
  "$(box curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/healthz)" 200
check "its status, as the gateway gives it" "$(box systemctl show -p StatusText --value algogate)" "serving on 0.0.0.0:8080"
check "the backup timer: active" "$(box systemctl is-active algogate-backup.timer)" active
check "/readyz" "$(box curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/readyz)" 200

# The sandbox, as the kernel holds it for the serving process.
pid=$(box systemctl show -p MainPID --value algogate)
status=$(box cat "/proc/$pid/status")
uid=$(awk '/^Uid:/ { print $2 }' <<<"$status")
check "a dynamic user (61184 to 65519)" "$([ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ] && echo yes)" yes
check "no capabilities" "$(awk '/^CapEff:|^CapPrm:|^CapBnd:/ { printf "%s ", $2 }' <<<"$status")" "0000000000000000 0000000000000000 0000000000000000 "
check "no new privileges, a seccomp filter" "$(awk '/^NoNewPrivs:|^Seccomp:/ { printf "%s ", $2 }' <<<"$status")" "1 2 "
check "the root filesystem read-only to it" "$(box nsenter --target "$pid" --mount test -w /usr/local/bin && echo writable || echo read-only)" read-only
check "its /proc shows other users' processes to none (ProtectProc=invisible)" \
  "$(box awk '$5 == "/proc" { print ($NF ~ /hidepid=invisible/) ? "invisible" : $NF }' "/proc/$pid/mountinfo")" invisible
filter=$(box systemctl show -p SystemCallFilter --value algogate)
check "its seccomp filter: chown, setuid, mount and setrlimit refused; setpriority allowed" \
  "$(for call in chown setuid mount setrlimit setpriority; do grep -qw "$call" <<<"$filter" && printf '%s ' "$call:allowed" || printf '%s ' "$call:refused"; done)" \
  "chown:refused setuid:refused mount:refused setrlimit:refused setpriority:allowed "
check "not dumpable: its /proc/PID/environ root's, closed to another process of its user (it holds the key)" \
  "$(box stat -c %u "/proc/$pid/environ") $(box setpriv --reuid "$uid" --regid "$uid" --clear-groups cat "/proc/$pid/environ" >/dev/null 2>&1 && echo read || echo refused)" "0 refused"
check "a user namespace of its own (PrivateUsers)" "$([ "$(box readlink "/proc/$pid/ns/user")" != "$(box readlink /proc/1/ns/user)" ] && echo own)" own
# The process metrics read /proc/self and /proc/stat: still readable in the sandbox.
metrics=$(box curl -s http://127.0.0.1:8080/metrics)
check "its metrics read its /proc: start time, open and maximum descriptors (LimitNOFILE)" \
  "$(awk '$1 == "process_start_time_seconds" { s = ($2 > 1.7e9) } $1 == "process_open_fds" { o = ($2 > 0) } $1 == "process_max_fds" { m = $2 + 0 } END { print s, o, m }' <<<"$metrics")" \
  "1 1 $(box awk '/^Max open files/ { print ($5 < 65536) ? $5 : 65536 }' /proc/1/limits)"

call() { box curl -s -D /run/head -H "Authorization: Simple $TEAM_KEY" -H 'Content-Type: text/plain' -d "$1" \
  "http://127.0.0.1:8080/v1/algo/util/Echo/1.0.0" | grep -o '"result":"[^"]*"'; }
cache() { box cat /run/head | grep -i '^x-cache:' | tr -d '\r' | cut -d' ' -f2; }
check "a pinned call, answered by the upstream" "$(call unit) $(cache)" '"result":"unit" MISS'
check "the same call, answered by the cache" "$(call unit) $(cache)" '"result":"unit" HIT'
check "a data directory made" "$(box curl -s -H "Authorization: Simple $TEAM_KEY" -H 'Content-Type: application/json' -d '{"name":"team-a"}' http://127.0.0.1:8080/v1/data/.my)" '{"result":"data://.my/team-a"}'
check "a data upload" "$(box curl -s -X PUT -H "Authorization: Simple $TEAM_KEY" --data-binary hi http://127.0.0.1:8080/v1/data/.my/team-a/x.txt)" '{"result":"data://.my/team-a/x.txt"}'
# Every request line reaches the journal: journald drops a unit's lines beyond its rate limit
# (10,000 in 30 s by default, times 4 to 5 with the free disk of a host: 1,300 to 1,700 requests
# a second), which the unit raises. Here the limit is set at 100 (about 400 with the free space),
# and 2,000 requests go in a burst.
box python3 -c '
import http.client
connection = http.client.HTTPConnection("127.0.0.1", 8080)
for _ in range(2000):
    connection.request("GET", "/healthz", headers={"X-Forwarded-For": "burst"})
    connection.getresponse().read()
'
lines=0
for _ in $(seq 50); do
  lines=$(box journalctl --no-pager -o cat -u algogate _PID="$pid" | grep -c '"forwarded_for":"burst"' || true)
  [ "$lines" -ge 2000 ] && break
  sleep 0.1
done
check "2,000 requests in a burst, the journal's limit 100: every line in the journal" "$lines" 2000
FILE="$TREE/var/lib/private/algogate/var/algogate.sqlite"
check "the state file, under StateDirectory: the dynamic user's, no one else's" "$(stat -c '%u %a' "$FILE")" "$uid 600"
check "/var/lib/private: root's alone" "$(stat -c '%U %a' "$TREE/var/lib/private")" "root 700"

# systemctl reload: ExecReload checks the config, then sends SIGHUP.
box systemctl reload algogate
for _ in $(seq 50); do box journalctl -u algogate --no-pager -o cat | grep -q '"configuration reloaded"' && break; sleep 0.1; done
check "systemctl reload: the config taken" "$(box journalctl -u algogate --no-pager -o cat | grep -c '"configuration reloaded"')" 1
cp "$TREE/etc/algogate/algogate.yaml" "$WORK/good.yaml"
sed -i 's/max_concurrency: 80 /max_concurrency: -1 /' "$TREE/etc/algogate/algogate.yaml"
check "systemctl reload with a bad config: refused" "$(box systemctl reload algogate 2>/dev/null && echo taken || echo refused)" refused
check "and the gateway serves on, unchanged" "$(box systemctl is-active algogate) $(call unit) $(cache)" 'active "result":"unit" HIT'
# A SIGHUP that bypasses ExecReload's check (sent by hand, or a --watch reload): the gateway
# refuses the config itself, and its status says so until a reload is taken.
status() { box systemctl show -p StatusText --value algogate; }
refused_status="serving on 0.0.0.0:8080; the last reload was refused, the configuration before it kept (see the log)"
box systemctl kill --kill-whom=main --signal=SIGHUP algogate
for _ in $(seq 50); do [ "$(status)" = "$refused_status" ] && break; sleep 0.1; done
check "a bad config sent by SIGHUP alone: refused by the gateway, its status saying so" "$(box systemctl is-active algogate) $(status)" "active $refused_status"
cp "$WORK/good.yaml" "$TREE/etc/algogate/algogate.yaml"
box systemctl reload algogate
for _ in $(seq 50); do [ "$(status)" = "serving on 0.0.0.0:8080" ] && break; sleep 0.1; done
check "the next reload taken: its status as before" "$(status)" "serving on 0.0.0.0:8080"

# The README's drop-in for systemd 253 and later (Type=notify-reload): systemctl reload waits for
# the gateway's RELOADING=1 (with a MONOTONIC_USEC past its signal) and READY=1, and without
# them would wait TimeoutStartSec (90 s) and fail.
version=$(box systemctl --version | awk 'NR == 1 { print $2 }')
if [ "$version" -ge 253 ]; then
  mkdir -p "$TREE/etc/systemd/system/algogate.service.d"
  sed -n '/^  Type=notify-reload$/,/^  ExecReload=\/usr/p' README.md | sed 's/^  //' | sed '1i [Service]' >"$TREE/etc/systemd/system/algogate.service.d/reload.conf"
  check "the README's notify-reload drop-in" "$(grep -c -e '^Type=notify-reload$' -e '^ExecReload=' "$TREE/etc/systemd/system/algogate.service.d/reload.conf")" 3
  box systemctl daemon-reload
  started=$(date +%s%N)
  check "Type=notify-reload: systemctl reload, a good config: done" "$(box timeout 60 systemctl reload algogate 2>/dev/null && echo done || echo failed)" done
  check "within 10 s (the gateway's RELOADING=1 and READY=1 came)" "$(( ($(date +%s%N) - started) / 1000000000 < 10 ))" 1
  check "the gateway active, its status serving" "$(box systemctl is-active algogate) $(status)" "active serving on 0.0.0.0:8080"
  sed -i 's/max_concurrency: 80 /max_concurrency: -1 /' "$TREE/etc/algogate/algogate.yaml"
  check "Type=notify-reload, a bad config: systemctl reload fails" "$(box timeout 60 systemctl reload algogate 2>/dev/null && echo done || echo failed)" failed
  for _ in $(seq 50); do [ "$(status)" = "$refused_status" ] && break; sleep 0.1; done
  check "the gateway refused it too, and serves on" "$(box systemctl is-active algogate) $(status) $(call unit) $(cache)" "active $refused_status \"result\":\"unit\" HIT"
  cp "$WORK/good.yaml" "$TREE/etc/algogate/algogate.yaml"
  check "and a good one again: done" "$(box timeout 60 systemctl reload algogate 2>/dev/null && echo done || echo failed) $(status)" "done serving on 0.0.0.0:8080"
  rm "$TREE/etc/systemd/system/algogate.service.d/reload.conf"
  box systemctl daemon-reload
else
  echo "--   Type=notify-reload (the README's drop-in) not run: it needs systemd 253 or later, and this is $version"
fi

# Restart=on-failure: a gateway killed outright is started again, its cache kept.
box systemctl kill --signal=SIGKILL algogate
for _ in $(seq 100); do
  [ "$(box systemctl show -p NRestarts --value algogate)" = 1 ] && up && break
  sleep 0.1
done
check "kill -9: restarted (Restart=on-failure)" "$(box systemctl show -p NRestarts --value algogate) $(box systemctl is-active algogate)" "1 active"
check "the cache kept across it" "$(call unit) $(cache)" '"result":"unit" HIT'

state() {  # state FILE: its integrity check, the cached answers and team-a's counted requests it holds
  python3 -c 'import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); print(db.execute("pragma integrity_check").fetchone()[0], db.execute("select count(*) from cache_entry").fetchone()[0], db.execute("select coalesce(sum(requests), 0) > 0 from usage_day where client = ?", ("team-a",)).fetchone()[0])' "$1"
}
# The backup service (the timer's), started by hand, then the restore its comment gives.
start_backup() {
  box systemctl start algogate-backup.service 2>/dev/null \
    || { echo "FAIL: the backup service failed" >&2; box journalctl --no-pager -n 20 -u algogate-backup >&2; exit 1; }
}
for _ in $(seq 50); do [ "$(state "$FILE")" = "ok 1 1" ] && break; sleep 0.1; done   # the counters are written each second
start_backup
copies=("$TREE"/var/backups/algogate/algogate-*.sqlite)
check "the backup service: one copy, in a directory root's alone" "${#copies[@]} $(stat -c '%U %a' "$TREE/var/backups/algogate") $(stat -c '%U %a' "${copies[0]}")" "1 root 700 root 600"
check "the copy: whole, without the cache (--without-cache), with the usage counters" "$(state "${copies[0]}")" "ok 0 1"
box systemctl stop algogate
check "systemctl stop: a clean exit" "$(box systemctl show -p Result --value algogate) $(box systemctl show -p ExecMainStatus --value algogate)" "success 0"
check "the state file whole after the stop" "$(state "$FILE")" "ok 1 1"
# The timer's backup with the gateway stopped: SQLite makes -wal and -shm files beside the state
# file as it reads it (as root, given the file's owner), and removes them as it closes; the
# 16 MiB the gateway keeps beside it (see Quotas: a full disk) stays its own.
sleep 1   # the copies are named for their second
start_backup
copies=("$TREE"/var/backups/algogate/algogate-*.sqlite)
check "the backup service, the gateway stopped: a second copy, whole" "${#copies[@]} $(state "${copies[1]}")" "2 ok 0 1"
check "and beside the state file, nothing of root's" "$(stat -c '%n %u' "$(dirname "$FILE")"/* | sed "s|^$(dirname "$FILE")/||" | tr '\n' ' ')" "algogate.sqlite $uid algogate.sqlite-reserve $uid "
box sh -c "cd /var/lib/algogate && algogate restore --config /etc/algogate/algogate.yaml --from '/var/backups/algogate/${copies[0]##*/}' --replace" >"$WORK/restore.log" 2>&1 \
  || { cat "$WORK/restore.log" >&2; echo "FAIL: the restore" >&2; exit 1; }
box systemctl start algogate
up || true
check "after the restore, the service runs on the copy: no cached answer" "$(call unit) $(cache)" '"result":"unit" MISS'
pid=$(box systemctl show -p MainPID --value algogate)
uid=$(box cat "/proc/$pid/status" | awk '/^Uid:/ { print $2 }')
check "the restored file, the service's user's" "$(stat -c '%u %a' "$FILE")" "$uid 600"

# HTTPS as Operating it, systemd, gives it: the certificate and its key, root's alone, handed to
# the service as credentials by a drop-in, the config naming their copies.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$TREE/etc/algogate/tls.key" -out "$TREE/etc/algogate/tls.crt" 2>/dev/null
chmod 0600 "$TREE/etc/algogate/tls.key"
mkdir -p "$TREE/etc/systemd/system/algogate.service.d"
sed -n '/^  \[Service\]$/,/^  LoadCredential=tls.key/p' README.md | sed 's/^  //' >"$TREE/etc/systemd/system/algogate.service.d/tls.conf"
tls=$(grep -m1 -o '^    tls: {cert_file: /run/credentials/[^}]*}' README.md | sed 's/^    //')
check "the README's drop-in and tls line" "$(grep -c '^LoadCredential=tls\.' "$TREE/etc/systemd/system/algogate.service.d/tls.conf") ${tls:+found}" "2 found"
sed -i "s|^  # tls: {cert_file: /etc/algogate/tls.crt, key_file: /etc/algogate/tls.key} |  $tls |" "$TREE/etc/algogate/algogate.yaml"
grep -q "^  $tls" "$TREE/etc/algogate/algogate.yaml" || { echo "FAIL: config/algogate.yaml's tls line changed; update this script" >&2; exit 1; }
box systemctl daemon-reload
box systemctl restart algogate
https() { box curl -s --cacert /etc/algogate/tls.crt -o /dev/null -w '%{http_code} %{ssl_verify_result}' https://127.0.0.1:8080/readyz; }
for _ in $(seq 100); do [ "$(https)" = "200 0" ] && break; sleep 0.1; done
check "HTTPS from the credentials: /readyz, the certificate verified" "$(https)" "200 0"
check "the service user reads the copies, not the key itself" "$(box stat -c '%U %a' /etc/algogate/tls.key)" "root 600"
box systemctl stop algogate

# The journal: every line a serving gateway wrote (its processes: the four runs above) is one
# JSON record, but for libdispatch's own line (README, Logs: a thread priority it may not set as
# any user but root), and no key is in any line of the units'.
box journalctl --no-pager -o json -u algogate >"$WORK/journal.json"
box journalctl --no-pager -o cat -u algogate -u algogate-backup >"$WORK/all.log"
check "the serving gateway's journal: JSON lines only (runs, other lines)" "$(python3 - "$WORK/journal.json" <<'PY'
import json, re, sys
entries = [json.loads(line) for line in open(sys.argv[1])]
text = lambda e: e["MESSAGE"] if isinstance(e.get("MESSAGE"), str) else repr(e.get("MESSAGE"))
runs = {e["_PID"] for e in entries if text(e).startswith('{"ts":') and '"msg":"algogate starting"' in text(e)}
def record(line):
    try: return isinstance(json.loads(line), dict)
    except ValueError: return False
libdispatch = re.compile(r"^Failed to set thread priority for worker thread: pqc=0x[0-9a-f]+ errno=13$")
other = [text(e) for e in entries if e.get("_PID") in runs and not record(text(e)) and not libdispatch.match(text(e))]
for line in other[:5]: print("  not JSON:", line, file=sys.stderr)
print(len(runs), len(other))
PY
)" "4 0"

# The watchdog (WatchdogSec=, 3 s here by a drop-in): a gateway that stops telling systemd it is
# alive is killed and started again. SIGSTOP holds it still; systemd's SIGABRT ends it all the
# same, as it ends a stuck one, since no handler takes that signal (see the unit's
# SWIFT_BACKTRACE): with Swift's backtracer on, it took the signal, failed, and the gateway lived on.
printf '[Service]\nWatchdogSec=3s\n' >"$TREE/etc/systemd/system/algogate.service.d/watchdog.conf"
box systemctl daemon-reload
box systemctl start algogate
pid=$(box systemctl show -p MainPID --value algogate)
restarts=$(box systemctl show -p NRestarts --value algogate)
sleep 4   # a watchdog interval and more: a gateway left alone is not killed
check "the watchdog, 3 s: a gateway running is left running" "$(box systemctl show -p MainPID --value algogate)" "$pid"
box kill -STOP "$pid"
# How the process ended, as systemd holds it until the restart (RestartSec=2) starts another:
# read there rather than from the journal, where journald's rate limit for systemd's own lines
# (set low here for the burst above) dropped "Main process exited" under systemd 257.
ended=""
for _ in $(seq 300); do
  ended=$(box systemctl show -p Result -p ExecMainCode -p ExecMainStatus algogate | sort | tr '\n' ' ')
  [ "$ended" = "ExecMainCode=2 ExecMainStatus=6 Result=watchdog " ] && break
  sleep 0.05
done
box kill -CONT "$pid" 2>/dev/null || true
for _ in $(seq 100); do
  [ "$(box systemctl show -p NRestarts --value algogate)" = "$((restarts + 1))" ] && [ "$(https)" = "200 0" ] && break
  sleep 0.1
done
check "a gateway held still: killed at the watchdog's timeout (Result=watchdog) by the SIGABRT itself (killed, signal 6: no backtracer to survive it)" \
  "$ended" "ExecMainCode=2 ExecMainStatus=6 Result=watchdog "
check "started again, serving, leaving no core file" \
  "$(( $(box systemctl show -p NRestarts --value algogate) - restarts )) $(https) $(find "$TREE/var/lib/private/algogate" -name 'core*' | wc -l)" "1 200 0 0"
box systemctl stop algogate
box journalctl --no-pager -o cat -u algogate -u algogate-backup >"$WORK/all.log"
check "no key in the journal" "$(grep -c -e "$SIM_KEY" -e "$TEAM_KEY" "$WORK/all.log" || true)" 0
echo "== systemd ran the gateway, its readiness, reload, restarts, watchdog, backup, restore and HTTPS as deploy/systemd and the README say"
