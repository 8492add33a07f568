#!/usr/bin/env bash
# End to end under a real systemd: the packages as a user installs them, systemd as PID 1 doing
# the socket activation, the READY=1 gating, the journal, the watchdog, stop, reload and upgrade.
#
#   bash tests/e2e/run.sh
#
# 1. builds the .deb and .rpm (packaging/build-packages.sh) and a revision-2 .deb for the upgrade;
# 2. builds a Debian 12 root file system with mmdebstrap and boots systemd in it, in fresh
#    namespaces (tests/e2e/container.sh: nothing on the host is touched);
# 3. runs the scenarios below in order against that one machine, with a fake ingest server
#    (tests/e2e/fake_ingest.py, 10 ms per request) and clients (tests/e2e/clients.py) running
#    inside it. Each check is one "ok"/"FAIL" line tagged with its scenario:
#     [1] install  [2] activation  [10] hardening score  [9] the API key  [3] drain before READY
#     [4] the startup record in the journal  [7] reload  [6] stop with requests in flight
#     [5] kill -9 mid-drain  [8] watchdog  [13] a failing disk  [11] upgrade, remove, purge
#     [12] the .rpm  [14] an upgrade that adds a listening address (.deb and .rpm)
#     [15] the per-user units under a real user manager (loginctl enable-linger)
# Prints "N passed, N failed" and the time each stage took; on any failure, the container's journal.
# Needs root. E2E_ROOTFS_CACHE=file.tar.zst keeps the root file system between local runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/lib/checks.sh
source tests/lib/checks.sh
# shellcheck source=tests/e2e/container.sh
source tests/e2e/container.sh

ms() { echo $(($(date +%s%N) / 1000000)); }
t_start=$(ms)
work=$(mktemp -d /tmp/gradata-e2e.XXXXXX)
root=$work/root
journal_dump() {
    [ -d "$root/var/log/journal" ] || return 0
    echo "== journal of the container (last 300 lines)"
    journalctl -D "$root/var/log/journal" --no-pager -o short-precise 2>&1 | tail -n 300 | sed 's/^/    /'
}
cleanup() {
    container_teardown
    [ "$fail" = 0 ] || journal_dump
    rm -rf "$work"
}
trap cleanup EXIT
# A signal still tears the container down (bash runs the EXIT trap on exit, not on a signal).
trap 'exit 130' INT TERM

# --- packages --------------------------------------------------------------------------------
echo "== packages (packaging/build-packages.sh)"
bash packaging/build-packages.sh >"$work/build.log" 2>&1 || {
    cat "$work/build.log"
    nok "packaging/build-packages.sh failed"
    summary || exit 1
}
deb=$(grep '\.deb$' "$work/build.log" | tail -n 1 || true)
rpm=$(grep '\.rpm$' "$work/build.log" | tail -n 1 || true)
if [ ! -f "$deb" ] || [ ! -f "$rpm" ]; then
    cat "$work/build.log"
    nok "packaging/build-packages.sh printed no .deb and .rpm paths"
    summary || exit 1
fi
version=$(cargo pkgid | sed 's/.*[#@]//')
deb2="$work/gradata_${version}-2.deb"
cargo deb --no-build --deb-revision 2 --output "$deb2" >/dev/null
# [14]'s previous-style packages: the same files, but gradata.socket listening on 8765 only (as
# before 7342 was added) and an older version, to upgrade from.
prev_src=$work/prev-src
mkdir -p "$prev_src/docs" "$prev_src/packaging"
cp -r systemd "$prev_src/"
cp LICENSE README.md "$prev_src/"
cp docs/operations.md "$prev_src/docs/"
cp packaging/gradata.toml "$prev_src/packaging/"
sed -i '/^ListenStream=127.0.0.1:7342$/d' "$prev_src/systemd/gradata.socket"
dpkg-deb -R "$deb" "$work/prev-deb"
cp "$prev_src/systemd/gradata.socket" "$work/prev-deb/usr/lib/systemd/system/gradata.socket"
sed -i "s/^Version: .*/Version: ${version}-0/" "$work/prev-deb/DEBIAN/control"
# Uncompressed (-Znone, w0.gzdio): they never leave this run, and compressing takes seconds.
dpkg-deb --root-owner-group -Znone -b "$work/prev-deb" "$work/gradata-prev.deb" >/dev/null
rpmbuild -bb --quiet --define "_topdir $work/prev-rpmbuild" --define "_binary_payload w0.gzdio" \
    --define "gradata_version ${version//-/\~}~prev" --define "gradata_src $prev_src" \
    --define "gradata_bin $work/prev-deb/usr/bin/gradata" --define "gradata_assets $(pwd)/target/assets" \
    packaging/gradata.spec </dev/null
cp "$work"/prev-rpmbuild/RPMS/*/gradata-*.rpm "$work/gradata-prev.rpm"
if grep -q '^ListenStream=127.0.0.1:7342$' "$work/prev-deb/usr/lib/systemd/system/gradata.socket" ||
    ! grep -q '^ListenStream=127.0.0.1:8765$' "$work/prev-deb/usr/lib/systemd/system/gradata.socket"; then
    nok "[14] the previous-style gradata.socket should listen on 8765 only"
fi
t_packages=$(ms)

# --- the machine -----------------------------------------------------------------------------
echo "== root file system (mmdebstrap)"
container_rootfs "$root" || {
    nok "building the root file system with mmdebstrap failed"
    summary || exit 1
}
t_rootfs=$(ms)
mkdir -p "$root/root/e2e"
cp "$deb" "$root/root/e2e/gradata.deb"
cp "$deb2" "$root/root/e2e/gradata-2.deb"
cp "$rpm" "$root/root/e2e/gradata.rpm"
cp "$work/gradata-prev.deb" "$work/gradata-prev.rpm" "$root/root/e2e/"
cp tests/e2e/fake_ingest.py tests/e2e/clients.py "$root/root/e2e/"
# [13]'s failing disk: a library that fails fsync of the WAL while a marker file exists, built here
# (the container has no compiler) and installed where the hardened service can read it.
mkdir -p "$root/usr/local/lib/gradata-e2e"
"${CC:-cc}" -shared -fPIC -O2 -o "$root/usr/local/lib/gradata-e2e/fsync_fault.so" \
    tests/it/support/fsync_fault.c -ldl
echo "== boot"
container_boot "$root"
t_boot=$(ms)
if [ "$CONTAINER_STATE" != running ]; then
    nok "systemd booted in the container (is-system-running: '${CONTAINER_STATE}')"
    sed 's/^/    /' "$root.boot.log" || true
    summary || exit 1
fi
ok "systemd booted in the container ($((t_boot - t_rootfs)) ms)"

# --- vocabulary ------------------------------------------------------------------------------
e2e=/root/e2e
api=http://127.0.0.1:8765
ingest=http://127.0.0.1:9999
active() { in_c systemctl is-active "$1" 2>/dev/null || true; }
prop() { in_c systemctl show -P "$2" "$1"; }
# json_eval EXPR: evaluates a Python expression over the JSON on stdin (bound to `d`) inside the container.
json_eval() { in_c python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
health() { c_sh "curl -sS -m 30 $api/health"; }
pending() { health | json_eval 'd["queue"]["pending"]'; }
# sql QUERY: as the service's user, so SQLite never leaves root-owned -wal/-shm files behind.
sql() { in_c runuser -u gradata -- sqlite3 -cmd '.timeout 10000' /var/lib/gradata/system.db "$1"; }
fake_control() { c_sh "curl -sS -m 10 -X POST -d '$1' $ingest/control" >/dev/null; }
delivered_with_prefix() { c_sh "curl -sS -m 10 '$ingest/ids?prefix=$1' | wc -l"; }
# fill_queue PREFIX N: N pending rows, as the original daemon (or a stopped gradata) leaves them.
fill_queue() {
    sql "INSERT INTO sync_queue(payload_json, kind, enqueued_at, event_id)
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
         SELECT json_object('brain_id', 'e2e', 'event_id', printf('$1-%06d', i), 'kind', 'event',
                            'data', json_object('n', i, 'pad', hex(zeroblob(40)))),
                'event', (julianday('now') - 2440587.5) * 86400.0, printf('$1-%06d', i)
         FROM n;"
}
# journal_of INVOCATION: the records of one run of a unit, every field.
journal_of() { c_sh "journalctl --no-pager -o verbose _SYSTEMD_INVOCATION_ID=$1"; }
# journal_says INVOCATION PATTERN: whether one of its records matches (a condition for wait_until).
# (grep reads everything: with pipefail, an early exit would fail the pipe by SIGPIPE.)
journal_says() { journal_of "$1" | grep -- "$2" >/dev/null; }
# post_event ID: one event through the native route.
post_event() {
    c_sh "curl -sS -m 10 $api/v1/events -H 'content-type: application/json' \
          -d '{\"kind\":\"event\",\"event_id\":\"$1\",\"data\":{}}'" >/dev/null
}
set_ingest_url() {
    c_sh "sed -i 's|^ingest_url = .*|ingest_url = \"$ingest$1\"|' /etc/gradata/gradata.toml"
}
file_exists() { test -e "$root$1"; }
# listening_on PORT...: whether every port is in LISTEN state on 127.0.0.1 inside the container
# (/proc/net/tcp: 0100007F is 127.0.0.1, the port in hex, 0A is LISTEN).
listening_on() {
    local port
    for port in "$@"; do
        c_sh "grep -q ' 0100007F:$(printf %04X "$port") 00000000:0000 0A ' /proc/net/tcp" || return 1
    done
}
is_active() { test "$(active "$1")" = "$2"; }
main_pid_changed() {
    local now
    now=$(prop gradata.service MainPID)
    [ "$now" != 0 ] && [ "$now" != "$1" ] && is_active gradata.service active
}
stop_service() { in_c systemctl stop gradata.service; }
random_key() { od -An -tx1 -N12 /dev/urandom | tr -d ' \n'; }

# --- [1] install -----------------------------------------------------------------------------
echo "== [1] dpkg -i"
check "[1] dpkg -i of the built .deb ($(basename "$deb"))" c_sh "dpkg -i $e2e/gradata.deb >/dev/null"
check "[1] gradata.socket is enabled and active" \
    test "$(in_c systemctl is-enabled gradata.socket) $(active gradata.socket)" = "enabled active"
check "[1] 127.0.0.1:7342 (the plugin's port) and 127.0.0.1:8765 are listening (held by systemd)" \
    listening_on 7342 8765
check "[1] gradata.service is not running before the first connection" is_active gradata.service inactive
check "[1] user and group gradata exist (sysusers)" \
    c_sh 'getent passwd gradata >/dev/null && getent group gradata >/dev/null'
check "[1] /run/gradata/gradata.sock is srw-rw---- root:gradata" \
    test "$(c_sh 'stat -c "%A %U:%G" /run/gradata/gradata.sock')" = "srw-rw---- root:gradata"

# --- [2] activation --------------------------------------------------------------------------
echo "== [2] socket activation"
out=$(health 2>&1 || true)
check "[2] a connection to 127.0.0.1:8765 starts the service" is_active gradata.service active
check "[2] GET /health answers: $(echo "$out" | head -c 160)" \
    test "$(echo "$out" | json_eval 'd["status"]' 2>/dev/null)" = ok
status_line=$(c_sh 'systemctl status gradata.service --no-pager 2>/dev/null | grep "Status:"' || true)
check "[2] systemctl status shows the STATUS= text (${status_line# *})" \
    grep -q 'Status: "serving; 0 pending' <<<"$status_line"
pid=$(prop gradata.service MainPID)
check "[2] the service runs as gradata" test "$(c_sh "stat -c %U /proc/$pid")" = gradata
check "[2] LISTEN_FDNAMES names the three sockets (two TCP ports as http, the unix socket)" \
    c_sh "tr '\0' '\n' </proc/$pid/environ | grep -qE '^LISTEN_FDNAMES=(unix:http:http|http:http:unix)$'"
check "[2] GET /health on 127.0.0.1:7342 (the plugin's port) answers too" \
    test "$(c_sh 'curl -sSf -m 10 http://127.0.0.1:7342/health' | json_eval 'd["status"]' 2>/dev/null)" = ok
check "[2] the queue is /var/lib/gradata/system.db (drwx------ gradata)" \
    c_sh 'test "$(stat -c "%A %U" /var/lib/gradata)" = "drwx------ gradata" &&
          test "$(stat -c %U /var/lib/gradata/system.db)" = gradata'
check "[2] the unix socket answers too" \
    c_sh 'curl -sSf -m 10 --unix-socket /run/gradata/gradata.sock http://localhost/health >/dev/null'
first_invocation=$(prop gradata.service InvocationID)
check "[9] without a key the service runs with sync disabled and its journal says where it looked" \
    bash -c 'grep -q "cloud sync is disabled" <<<"$1" && grep -q "looked at: .*api-key" <<<"$1"' \
    sh "$(journal_of "$first_invocation")"

# --- [10] hardening --------------------------------------------------------------------------
echo "== [10] systemd-analyze security"
in_c systemd-analyze security --no-pager gradata.service >"$work/security.out" 2>&1 || true
exposure=$(sed -n 's/.*Overall exposure level for gradata.service: \([0-9.]*\).*/\1/p' "$work/security.out")
grep -E '^(✗|→)' "$work/security.out" | sed 's/^/    /' || true
check "[10] systemd-analyze security gradata.service (live): exposure ${exposure:-none} (at most 2.0)" \
    awk -v e="${exposure:-99}" 'BEGIN { exit !(e <= 2.0) }'

# --- [9] the API key -------------------------------------------------------------------------
echo "== [9] the API key"
c_sh "systemd-run --quiet --unit e2e-ingest python3 $e2e/fake_ingest.py"
wait_until 30 c_sh "curl -sf -m 2 $ingest/stats >/dev/null" || nok "the fake ingest server did not come up"
set_ingest_url /ingest
# The shipped unit's way: LoadCredential= from the root-only /etc/gradata/api-key.
key_credential=credential-$(random_key)
c_sh "install -m 0600 /dev/stdin /etc/gradata/api-key <<EOF
$key_credential
EOF"
in_c systemctl restart gradata.service
inv=$(prop gradata.service InvocationID)
check "[9] LoadCredential= hands /etc/gradata/api-key over (journal: key source is the credential)" \
    wait_until 30 journal_says "$inv" 'KEY_SOURCE=systemd credential /run/credentials/gradata.service/api-key'
post_event s9-credential
wait_until 30 equals 1 delivered_with_prefix s9-credential || true
check "[9] the ingest server got the event with the credential's key" \
    c_sh "curl -sS $ingest/stats | grep -q 'Bearer $key_credential'"
# The test's way, as the issue asks for containers without credentials: an EnvironmentFile=.
key_env=environment-$(random_key)
c_sh "install -m 0600 /dev/stdin /etc/gradata/e2e.env <<EOF
GRADATA_API_KEY=$key_env
EOF
mkdir -p /etc/systemd/system/gradata.service.d
printf '[Service]\nEnvironmentFile=/etc/gradata/e2e.env\n' >/etc/systemd/system/gradata.service.d/e2e-key.conf
systemctl daemon-reload && systemctl restart gradata.service"
inv=$(prop gradata.service InvocationID)
check "[9] EnvironmentFile= drop-in: the journal says the key came from GRADATA_API_KEY" \
    wait_until 30 journal_says "$inv" 'KEY_SOURCE=environment variable GRADATA_API_KEY'
post_event s9-environment
wait_until 30 equals 1 delivered_with_prefix s9-environment || true
check "[9] the ingest server got the event with the environment file's key" \
    c_sh "curl -sS $ingest/stats | grep -q 'Bearer $key_env'"
for key in "$key_credential" "$key_env"; do
    check "[9] the key ${key%%-*} is not in systemctl show / status" \
        c_sh "! { systemctl show gradata.service; systemctl status --no-pager gradata.service; } 2>&1 | grep -q '$key'"
    check "[9] the key ${key%%-*} is not in the journal (every field of every record)" \
        c_sh "! journalctl --no-pager -o export | grep -aq '$key'"
    check "[9] the key ${key%%-*} is not in /health" c_sh "! curl -sS $api/health | grep -q '$key'"
done

# --- [3] drain before READY ------------------------------------------------------------------
echo "== [3] a 3,200-row backlog is drained before READY=1"
stop_service
fill_queue s3 3200
check "[3] 3,200 rows pending in the stopped service's queue" \
    test "$(sql 'SELECT count(*) FROM sync_queue WHERE synced_at IS NULL AND dead_at IS NULL')" = 3200
fake_control '{"latency_ms": 10, "status": 200}'
cat >"$root/etc/systemd/system/e2e-dependent.service" <<EOF
[Unit]
Description=a unit that needs gradata
Requires=gradata.service
After=gradata.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'curl -sS -m 60 $api/health >$e2e/dependent-health.json'
EOF
in_c systemctl daemon-reload
# The client connects first (the service is stopped, so this connection activates it), then the
# dependent unit is started while the service is still draining.
c_sh "systemd-run --quiet --unit e2e-probe python3 $e2e/clients.py probe $e2e/probe.json"
wait_until 30 file_exists "$e2e/probe.json.connected" || nok "[3] the probe never connected"
in_c systemctl start e2e-dependent.service || nok "[3] systemctl start e2e-dependent.service failed"
wait_until 60 file_exists "$e2e/probe.json" || nok "[3] the probe was never answered"
ready=$(prop gradata.service ActiveEnterTimestampMonotonic)
exec_start=$(prop gradata.service ExecMainStartTimestampMonotonic)
dependent_start=$(prop e2e-dependent.service ExecMainStartTimestampMonotonic)
s3_invocation=$(prop gradata.service InvocationID)
probe=$(cat "$root$e2e/probe.json" 2>/dev/null || echo '{}')
probe_connected=$(echo "$probe" | json_eval 'int(d["connected"] * 1e6)')
probe_answered=$(echo "$probe" | json_eval 'int(d["answered"] * 1e6)')
last_delivery=$(c_sh "curl -sS $ingest/stats" | json_eval 'int(d["last_delivery"] * 1e6)')
echo "    exec $exec_start µs, client connected $probe_connected, last row delivered $last_delivery," \
    "READY=1 $ready, dependent started $dependent_start, client answered $probe_answered" \
    "(drain before READY: $(((ready - exec_start) / 1000)) ms)"
check "[3] the client connected before READY=1 (while the service drained)" \
    test "$probe_connected" -lt "$ready"
check "[3] the fake ingest server got every one of the 3,200 rows before READY=1" \
    test "$(delivered_with_prefix s3-)" = 3200 -a "$last_delivery" -le "$ready"
check "[3] the dependent unit started only after READY=1" test "$dependent_start" -ge "$ready"
check "[3] the client was answered only after the drain" test "$probe_answered" -ge "$last_delivery"
check "[3] the client's GET /health shows pending: 0" \
    test "$(echo "$probe" | json_eval 'd["body"]["queue"]["pending"]')" = 0
check "[3] the dependent unit's GET /health shows pending: 0" \
    test "$(json_eval 'd["queue"]["pending"]' <"$root$e2e/dependent-health.json" 2>/dev/null)" = 0

# --- [4] the startup record ------------------------------------------------------------------
echo "== [4] the startup drain's journal record"
message_id=5f0b3a4c9d2e4e7a8c1f6b2d3e4a5b6c
c_sh "journalctl --no-pager -u gradata -o json _SYSTEMD_INVOCATION_ID=$s3_invocation MESSAGE_ID=$message_id" \
    >"$work/startup-record.json" || true
check "[4] exactly one 'sync queue drained at startup' record for that start" \
    test "$(wc -l <"$work/startup-record.json")" = 1
record() { head -n 1 "$work/startup-record.json" | json_eval "d.get('$1')"; }
echo "    $(record MESSAGE) DELIVERED=$(record DELIVERED) DEAD=$(record DEAD)" \
    "REMAINING=$(record REMAINING) ELAPSED_MS=$(record ELAPSED_MS) REASON=$(record REASON)"
check "[4] its text is 'sync queue drained at startup: 3200 rows'" \
    test "$(record MESSAGE)" = "sync queue drained at startup: 3200 rows"
check "[4] structured fields DELIVERED=3200 DEAD=0 REMAINING=0, ELAPSED_MS and REASON present" \
    test "$(record DELIVERED) $(record DEAD) $(record REMAINING)" = "3200 0 0" \
    -a "$(record ELAPSED_MS)" != None -a "$(record REASON)" != None
check "[4] INFO is priority 6" test "$(record PRIORITY)" = 6
check "[4] journalctl MESSAGE_ID=… (no unit filter) finds it" \
    c_sh "journalctl --no-pager -o cat MESSAGE_ID=$message_id | grep -qx 'sync queue drained at startup: 3200 rows'"

# --- [7] reload ------------------------------------------------------------------------------
echo "== [7] systemctl reload"
pid=$(prop gradata.service MainPID)
c_sh "mkdir -p $e2e/poll && systemd-run --quiet --unit e2e-poll python3 $e2e/clients.py poll $e2e/poll"
wait_until 30 file_exists "$e2e/poll/started" || nok "[7] the poller never got an answer"
set_ingest_url /ingest-reloaded
check "[7] systemctl reload gradata succeeds" in_c systemctl reload gradata.service
wait_until 30 journal_says "$(prop gradata.service InvocationID)" 'MESSAGE=configuration reloaded' ||
    true
post_event s7-after-reload
wait_until 30 equals 1 delivered_with_prefix s7-after-reload || true
check "[7] the new ingest_url is in force (the next event went to /ingest-reloaded)" \
    test "$(c_sh "curl -sS $ingest/stats" | json_eval 'd["paths"].get("/ingest-reloaded", 0)')" -ge 1
touch "$root$e2e/poll/stop"
wait_until 30 file_exists "$e2e/poll/result.json" || true
poll=$(cat "$root$e2e/poll/result.json" 2>/dev/null || echo '{"ok": 0, "failed": -1}')
check "[7] same process (MainPID $pid), and every GET /health during the reload was answered ($poll)" \
    test "$(prop gradata.service MainPID) $(echo "$poll" | json_eval 'd["failed"]')" = "$pid 0" \
    -a "$(echo "$poll" | json_eval 'd["ok"]')" -gt 0

# --- [6] stop with requests in flight --------------------------------------------------------
echo "== [6] systemctl stop with requests in flight"
c_sh "mkdir -p $e2e/load && systemd-run --quiet --unit e2e-load python3 $e2e/clients.py load $e2e/load 16"
accepted_so_far() { cat "$root$e2e"/load/accepted-* 2>/dev/null | wc -l; }
wait_until 60 at_least 500 accepted_so_far || nok "[6] the writers got fewer than 500 events in"
c_sh "systemd-run --quiet --unit e2e-slow python3 $e2e/clients.py slow-post $e2e/slow.json $e2e/slow.go"
wait_until 30 file_exists "$e2e/slow.json.sent" || nok "[6] the slow request was never sent"
inv=$(prop gradata.service InvocationID)
in_c systemctl stop gradata.service &
stopper=$!
# The slow request's headers are in; its body is finished only once the service is stopping.
wait_until 30 is_active gradata.service deactivating || nok "[6] the service never went to deactivating"
touch "$root$e2e/slow.go"
wait "$stopper" || nok "[6] systemctl stop failed"
result=$(prop gradata.service Result)
touch "$root$e2e/load/stop"
wait_until 60 file_exists "$e2e/load/result.json" || nok "[6] the writers never finished"
wait_until 30 file_exists "$e2e/slow.json" || nok "[6] the slow request was never answered"
check "[6] systemctl stop: Result=$result" test "$result" = success
check "[6] the request in flight at the stop was answered 2xx: $(cat "$root$e2e/slow.json" 2>/dev/null)" \
    test "$(json_eval 'd["status"] // 100' <"$root$e2e/slow.json" 2>/dev/null)" = 2
cat "$root$e2e"/load/accepted-* | sort -u >"$work/accepted"
if [ "$(json_eval 'd["status"]' <"$root$e2e/slow.json" 2>/dev/null)" -lt 300 ] 2>/dev/null; then
    echo s6-slow >>"$work/accepted"
fi
sort -u -o "$work/accepted" "$work/accepted"
{
    sql "SELECT event_id FROM sync_queue WHERE event_id LIKE 's6-%'"
    c_sh "curl -sS $ingest/ids?prefix=s6-"
} | sort -u >"$work/kept"
lost=$(comm -23 "$work/accepted" "$work/kept" | wc -l)
echo "    writers: $(cat "$root$e2e/load/result.json" 2>/dev/null); stop took the service from $inv"
check "[6] no accepted event lost: $(wc -l <"$work/accepted") accepted, $lost missing from the queue and the ingest server" \
    test "$lost" = 0 -a "$(wc -l <"$work/accepted")" -ge 500
check "[6] the writers saw the service go (refused or closed), not hang" \
    test "$(json_eval 'd["refused"] + d["closed"] + d["errors"]' <"$root$e2e/load/result.json" 2>/dev/null)" -ge 1

in_c systemctl start gradata.service
all_accepted_delivered() {
    c_sh "curl -sS $ingest/ids?prefix=s6-" | sort -u | comm -23 "$work/accepted" - | cmp -s - /dev/null
}
check "[6] after the next start every accepted event reaches the ingest server" \
    wait_until 120 all_accepted_delivered

# --- [5] kill -9 mid-drain -------------------------------------------------------------------
echo "== [5] kill -9 while the startup drain runs"
stop_service
fill_queue s5 6400
in_c systemctl start --no-block gradata.service
wait_until 60 at_least 500 delivered_with_prefix s5- || nok "[5] the drain never got going"
pid=$(prop gradata.service MainPID)
state=$(prop gradata.service ActiveState)
c_sh "kill -9 $pid"
at_kill=$(delivered_with_prefix s5-)
echo "    killed $pid ($state) with $at_kill of 6400 rows delivered"
check "[5] the kill came mid-drain (${at_kill} of 6400 delivered)" test "$at_kill" -lt 6400
check "[5] systemd restarted the service (Restart=on-failure)" wait_until 60 main_pid_changed "$pid"
check "[5] the journal says the old process was killed by signal 9" \
    c_sh "journalctl --no-pager -u gradata.service -o cat | grep -q 'Main process exited, code=killed, status=9/KILL'"
check "[5] the fake ingest server ends up with every one of the 6,400 rows" \
    wait_until 180 equals 6400 delivered_with_prefix s5-
check "[5] and the queue has nothing pending" \
    wait_until 30 equals 0 pending
restarted=$(prop gradata.service InvocationID)
check "[5] the next start's startup drain delivered rows left by the killed one" \
    c_sh "journalctl --no-pager -o json _SYSTEMD_INVOCATION_ID=$restarted MESSAGE_ID=$message_id | grep -q '\"DELIVERED\":\"[1-9]'"

# --- [8] watchdog ----------------------------------------------------------------------------
echo "== [8] watchdog"
# First the control: with WatchdogSec=2s and nothing stalled, the pings keep coming.
c_sh "printf '[Service]\nWatchdogSec=2s\n' >/etc/systemd/system/gradata.service.d/e2e-watchdog.conf &&
      systemctl daemon-reload && systemctl restart gradata.service"
pid=$(prop gradata.service MainPID)
restarts=$(prop gradata.service NRestarts)
since=$(prop gradata.service ActiveEnterTimestampMonotonic)
pinged_for_5s() { test "$(prop gradata.service WatchdogTimestampMonotonic)" -gt $((since + 5000000)); }
watchdog_fed() {
    wait_until 30 pinged_for_5s &&
        test "$(prop gradata.service MainPID) $(prop gradata.service NRestarts)" = "$pid $restarts"
}
check "[8] WatchdogSec=2s, healthy: WATCHDOG=1 still arriving 5 s after start, same PID $pid" watchdog_fed
c_sh "printf '[Service]\nWatchdogSec=2s\nEnvironment=GRADATA_TEST_STALL_WORKER_AFTER_SECS=1\n' \
      >/etc/systemd/system/gradata.service.d/e2e-watchdog.conf && systemctl daemon-reload && systemctl restart gradata.service"
check "[8] with the sync worker stalled (test hook): Result=watchdog" \
    wait_until 60 c_sh "journalctl --no-pager -u gradata.service -o cat | grep -q \"gradata.service: Failed with result 'watchdog'\""
restarted() { test "$(prop gradata.service NRestarts)" -gt "$restarts"; }
check "[8] and systemd restarts it (NRestarts was $restarts)" wait_until 60 restarted
c_sh 'rm /etc/systemd/system/gradata.service.d/e2e-watchdog.conf && systemctl daemon-reload && systemctl restart gradata.service'

# --- [13] a failing disk --------------------------------------------------------------------
echo "== [13] a failed fsync: the service stops, systemd restarts it, nothing acknowledged is lost"
fault=/run/gradata-e2e-fsync-fault
c_sh "printf '[Service]\nEnvironment=LD_PRELOAD=/usr/local/lib/gradata-e2e/fsync_fault.so FSYNC_FAULT_MARKER=$fault\n' \
      >/etc/systemd/system/gradata.service.d/e2e-fault.conf && systemctl daemon-reload && systemctl restart gradata.service"
pid=$(prop gradata.service MainPID)
invocation=$(prop gradata.service InvocationID)
restarts=$(prop gradata.service NRestarts)
for i in 1 2 3; do post_event "s13-$i"; done
# Delivered and settled first, so that the write below is the only one to meet the failing disk
# (with the disk still failing, a restarted service cannot even open the outbox).
check "[13] three events acknowledged and delivered" wait_until 60 equals 0 pending
# The refused write, then at once the disk heals and a producer writes again: systemd restarts the
# service 2 s later (RestartSec=), and gradata.socket holds that connection until it is ready.
refused=$(c_sh "touch $fault && curl -sS -m 10 -o $e2e/s13-refused.json -w '%{http_code}' $api/v1/events \
                  -H 'content-type: application/json' -d '{\"kind\":\"event\",\"event_id\":\"s13-4\",\"data\":{}}'
                rm -f $fault")
check "[13] the write that met the failed fsync: 503 flush_failed (got $refused)" \
    c_sh "test $refused = 503 && grep -q '\"code\":\"flush_failed\"' $e2e/s13-refused.json"
acknowledged_by_a_new_process() {
    c_sh "curl -sS -m 30 -f -o /dev/null $api/v1/events -H 'content-type: application/json' \
          -d '{\"kind\":\"event\",\"event_id\":\"$1\",\"data\":{}}'" &&
        main_pid_changed "$pid"
}
check "[13] the next write is acknowledged, by a new process" acknowledged_by_a_new_process s13-5
check "[13] systemd restarted it (Restart=on-failure; NRestarts was $restarts)" \
    test "$(prop gradata.service NRestarts)" -gt "$restarts"
check "[13] the failed run exited with status 1" \
    c_sh "journalctl --no-pager -u gradata.service -o cat | grep -q 'Main process exited, code=exited, status=1/FAILURE'"
check "[13] its journal says why" \
    journal_says "$invocation" 'could not be made durable: fsync of the WAL.*stopping, so that the service starts again'
check "[13] every acknowledged event is delivered (s13-1..3 and s13-5)" \
    wait_until 60 c_sh "for id in 1 2 3 5; do curl -sS -m 10 '$ingest/ids?prefix=s13-' | grep -qx \"s13-\$id\" || exit 1; done"
c_sh 'rm /etc/systemd/system/gradata.service.d/e2e-fault.conf && systemctl daemon-reload && systemctl restart gradata.service'

# --- [11] upgrade, remove, purge -------------------------------------------------------------
echo "== [11] upgrade with rows pending, remove, purge"
fake_control '{"status": 503}'
c_sh "python3 -c 'import json; print(json.dumps([{\"kind\": \"event\", \"event_id\": \"s11-%03d\" % i, \"data\": {}} for i in range(200)]))' |
      curl -sS -m 30 $api/v1/events -H 'content-type: application/json' --data-binary @-" >/dev/null
check "[11] 200 rows pending while the ingest server answers 503" \
    wait_until 30 at_least 200 pending
pid=$(prop gradata.service MainPID)
socket_since=$(prop gradata.socket ActiveEnterTimestampMonotonic)
check "[11] dpkg -i of revision 2" c_sh "dpkg -i $e2e/gradata-2.deb >/dev/null"
check "[11] the sockets' addresses did not change, so gradata.socket kept listening (not restarted)" \
    test "$(prop gradata.socket ActiveEnterTimestampMonotonic)" = "$socket_since"
check "[11] the package is now ${version}-2" \
    test "$(in_c dpkg-query -W -f='${Version}' gradata)" = "${version}-2"
check "[11] the upgrade restarted the service" main_pid_changed "$pid"
fake_control '{"status": 200}'
c_sh "curl -sS -m 60 -X POST $api/sync >/dev/null"
check "[11] no row lost across the upgrade: all 200 delivered" \
    wait_until 120 equals 200 delivered_with_prefix s11-
check "[11] dpkg -r" c_sh 'dpkg -r gradata >/dev/null'
check "[11] remove stopped the sockets and the service" \
    test "$(active gradata.socket) $(active gradata-unix.socket) $(active gradata.service)" = "inactive inactive inactive"
check "[11] remove kept /var/lib/gradata (the queue), the key and the user" \
    c_sh 'test -f /var/lib/gradata/system.db && test -f /etc/gradata/api-key && getent passwd gradata >/dev/null'
check "[11] dpkg -P" c_sh 'dpkg -P gradata >/dev/null'
check "[11] purge removed /var/lib/gradata, /etc/gradata and the user" \
    c_sh '! test -e /var/lib/gradata && ! test -e /etc/gradata && ! getent passwd gradata'

# --- [12] the .rpm ---------------------------------------------------------------------------
echo "== [12] rpm -i --nodeps"
c_sh 'rm -rf /etc/systemd/system/gradata.service.d && systemctl daemon-reload'
check "[12] rpm -i --nodeps runs its scriptlets" c_sh "rpm -i --nodeps $e2e/gradata.rpm"
check "[12] %post: gradata.socket enabled and listening, the service not started" \
    test "$(in_c systemctl is-enabled gradata.socket) $(active gradata.socket) $(active gradata-unix.socket) $(active gradata.service)" = "enabled active active inactive"
out=$(health 2>&1 || true)
check "[12] the first connection starts the service: $(echo "$out" | head -c 100)" \
    test "$(active gradata.service) $(echo "$out" | json_eval 'd["status"]' 2>/dev/null)" = "active ok"
check "[12] rpm -e stops sockets and service" \
    sh -c 'nsenter -t "$1" -m -u -i -n -p -C rpm -e --nodeps gradata &&
           test "$(nsenter -t "$1" -m -u -i -n -p -C systemctl is-active gradata.socket gradata.service | sort -u)" = inactive' \
    sh "$CONTAINER_PID1"

t_scenario14=$(ms)
# --- [14] an upgrade that adds a listening address -------------------------------------------
echo "== [14] upgrade from a gradata.socket on 8765 only: the socket unit is restarted, 7342 listens"
# upgrade_adds_7342 TAG INSTALL UPGRADE REMOVE: installs the previous-style package, lets a
# connection start the service, upgrades, and checks that 7342 now listens and is served.
listening_on_8765_only() { listening_on 8765 && ! listening_on 7342; }
upgrade_adds_7342() {
    local tag=$1 pid since
    check "[14] $tag: install the previous-style package" c_sh "$2"
    check "[14] $tag: before the upgrade 8765 listens and 7342 does not" listening_on_8765_only
    health >/dev/null 2>&1 || true
    pid=$(prop gradata.service MainPID)
    since=$(prop gradata.socket ActiveEnterTimestampMonotonic)
    check "[14] $tag: upgrade" c_sh "$3"
    check "[14] $tag: gradata.socket was restarted by the package's scripts" \
        test "$(active gradata.socket)" = active -a "$(prop gradata.socket ActiveEnterTimestampMonotonic)" != "$since"
    check "[14] $tag: 127.0.0.1:7342 and 127.0.0.1:8765 listen after the upgrade" listening_on 7342 8765
    check "[14] $tag: the running service was restarted with the new sockets" main_pid_changed "$pid"
    check "[14] $tag: GET /health on 127.0.0.1:7342 answers" \
        test "$(c_sh 'curl -sS -m 30 http://127.0.0.1:7342/health' | json_eval 'd["status"]' 2>/dev/null)" = ok
    check "[14] $tag: nothing noted for the upgrade is left in /run" \
        c_sh '! test -e /run/gradata.listen-before-upgrade'
    check "[14] $tag: remove" c_sh "$4"
}
upgrade_adds_7342 deb "dpkg -i $e2e/gradata-prev.deb >/dev/null" "dpkg -i $e2e/gradata.deb >/dev/null" \
    "dpkg -P gradata >/dev/null"
upgrade_adds_7342 rpm "rpm -i --nodeps $e2e/gradata-prev.rpm" "rpm -U --nodeps $e2e/gradata.rpm" \
    "rpm -e --nodeps gradata"
t_scenario14_end=$(ms)
echo "    [14] took $((t_scenario14_end - t_scenario14)) ms"

t_scenario15=$(ms)
# --- [15] the per-user instance under a real user manager ------------------------------------
echo "== [15] per-user units: systemctl --user enable --now gradata.socket, as a developer would"
dev_uid=1500
dev_home=/home/dev
check "[15] dpkg -i" c_sh "dpkg -i $e2e/gradata.deb >/dev/null"
# A host runs one of the two instances: the system one goes, as docs/operations.md says.
check "[15] the system instance is disabled and stopped (systemctl disable --now)" \
    c_sh 'systemctl disable --now gradata.socket gradata-unix.socket >/dev/null 2>&1 && systemctl stop gradata.service'
# The system instance's configuration names its own data directory, which dev cannot write: the
# per-user service must not read that file (its unit sets GRADATA_CONFIG= to none).
c_sh "sed -i '1i data_dir = \"/var/lib/gradata\"' /etc/gradata/gradata.toml"
c_sh "useradd --create-home --uid $dev_uid --shell /bin/bash dev"
# as_dev CMD...: a command as the developer, with the environment a login session would give.
as_dev() {
    in_c runuser -u dev -- env HOME=$dev_home XDG_RUNTIME_DIR=/run/user/$dev_uid "$@"
}
dev_sh() { as_dev sh -c "$1"; }
user_active() { as_dev systemctl --user is-active "$1" 2>/dev/null || true; }
user_prop() { as_dev systemctl --user show -P "$2" "$1"; }
user_manager_up() { test "$(as_dev systemctl --user is-system-running 2>/dev/null)" = running; }
check "[15] loginctl enable-linger dev starts the user's manager (user@$dev_uid.service)" \
    sh -c 'nsenter -t "$1" -m -u -i -n -p -C loginctl enable-linger dev' sh "$CONTAINER_PID1"
check "[15] the user manager is running" wait_until 30 user_manager_up
check "[15] as dev: systemctl --user enable --now gradata.socket" \
    as_dev systemctl --user enable --now gradata.socket
check "[15] the user's gradata.socket is enabled and active, its service not started yet" \
    test "$(as_dev systemctl --user is-enabled gradata.socket) $(user_active gradata.socket) $(user_active gradata.service)" = "enabled active inactive"
check "[15] 127.0.0.1:7342 and 127.0.0.1:8765 are listening (held by the user manager)" listening_on 7342 8765
out=$(c_sh 'curl -sS -m 10 http://127.0.0.1:7342/health' 2>&1 || true)
check "[15] GET /health on 127.0.0.1:7342 starts the user's service and answers: $(echo "$out" | head -c 120)" \
    test "$(user_active gradata.service) $(echo "$out" | json_eval 'd["status"]' 2>/dev/null)" = "active ok"
pid=$(user_prop gradata.service MainPID)
check "[15] the service runs as dev, under user@$dev_uid.service" \
    test "$(c_sh "stat -c %U /proc/$pid") $(c_sh "grep -o 'user@$dev_uid.service' /proc/$pid/cgroup | head -n 1")" = "dev user@$dev_uid.service"
check "[15] the user manager applied the unit's hardening: no new privileges, a seccomp filter" \
    c_sh "grep -q '^NoNewPrivs:[[:space:]]*1\$' /proc/$pid/status && grep -q '^Seccomp:[[:space:]]*2\$' /proc/$pid/status"
# brain_is DIR MODE: the user's service serves the brain DIR (what /health says), the directory
# has MODE and belongs to dev, and system.db is in it, dev's too.
brain_is() {
    test "$(c_sh 'curl -sS -m 10 http://127.0.0.1:7342/health' | json_eval 'd["data_dir"]' 2>/dev/null)" = "$1" &&
        test "$(c_sh "stat -c '%A %U' $1; stat -c %U $1/system.db" | tr '\n' ' ')" = "$2 dev dev "
}
check "[15] the brain is dev's ~/.local/state/gradata (drwx------ dev), system.db in it" \
    brain_is "$dev_home/.local/state/gradata" drwx------
check "[15] the system instance cannot start beside it: ports taken" \
    c_sh '! systemctl start gradata.socket 2>/dev/null'
c_sh 'systemctl reset-failed gradata.socket 2>/dev/null || true'

# The startup drain is bounded by the unit, so the plugin's 3 s session-start hook is answered
# even when the cloud is slow: 300 rows pending, a key, and an ingest server taking 5 s a request.
as_dev systemctl --user stop gradata.service
dev_sh "sqlite3 -cmd '.timeout 10000' $dev_home/.local/state/gradata/system.db \"INSERT INTO sync_queue(payload_json, kind, enqueued_at, event_id)
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
     SELECT json_object('brain_id', 'e2e', 'event_id', printf('s15-%06d', i), 'kind', 'event', 'data', json_object('n', i)),
            'event', (julianday('now') - 2440587.5) * 86400.0, printf('s15-%06d', i) FROM n;\""
dev_sh "mkdir -p ~/.config/systemd/user/gradata.service.d &&
        printf '[Service]\nEnvironment=GRADATA_API_KEY=dev-key GRADATA_CLOUD_INGEST_URL=$ingest/ingest-user\n' \
        >~/.config/systemd/user/gradata.service.d/e2e-ingest.conf"
as_dev systemctl --user daemon-reload
fake_control '{"latency_ms": 5000, "status": 200}'
started=$(ms)
out=$(c_sh 'curl -sS -m 20 http://127.0.0.1:7342/health' 2>&1 || true)
took=$(($(ms) - started))
fake_control '{"latency_ms": 10, "status": 200}'
check "[15] with 300 rows pending and a 5 s ingest, the first GET /health is answered in ${took} ms (under the plugin's 3 s)" \
    test "$took" -lt 3000 -a "$(echo "$out" | json_eval 'd["status"]' 2>/dev/null)" = ok
check "[15] ... because the startup drain stopped at its 1 s budget (rows still pending: $(echo "$out" | json_eval 'd["queue"]["pending"]' 2>/dev/null))" \
    test "$(echo "$out" | json_eval 'd["queue"]["pending"]' 2>/dev/null)" -gt 0
check "[15] the rows are delivered afterwards" wait_until 120 equals 300 delivered_with_prefix s15-

# An existing home brain, named in a drop-in as docs/operations.md shows.
dev_sh "mkdir -p ~/.gradata/brain && rm ~/.config/systemd/user/gradata.service.d/e2e-ingest.conf &&
        printf '[Service]\nEnvironment=GRADATA_DATA_DIR=%%h/.gradata/brain\n' >~/.config/systemd/user/gradata.service.d/brain.conf"
as_dev systemctl --user daemon-reload
as_dev systemctl --user restart gradata.service
check "[15] with the drop-in GRADATA_DATA_DIR=%h/.gradata/brain, /health answers on 7342" \
    test "$(c_sh 'curl -sS -m 10 http://127.0.0.1:7342/health' | json_eval 'd["status"]' 2>/dev/null)" = ok
check "[15] and the brain is ~/.gradata/brain (its mode kept, system.db there)" \
    brain_is "$dev_home/.gradata/brain" drwxr-xr-x
as_dev systemctl --user disable --now gradata.socket gradata.service 2>/dev/null || true
check "[15] systemctl --user disable --now gradata.socket gradata.service: both stopped, 7342 closed" \
    test "$(user_active gradata.socket) $(user_active gradata.service) $(listening_on 7342 && echo open)" = "inactive inactive "
in_c loginctl disable-linger dev
c_sh 'dpkg -P gradata >/dev/null'
t_scenario15_end=$(ms)
echo "    [15] took $((t_scenario15_end - t_scenario15)) ms"

t_end=$(ms)
echo "timing: packages $((t_packages - t_start)) ms, root file system $((t_rootfs - t_packages)) ms," \
    "boot $((t_boot - t_rootfs)) ms, scenarios $((t_end - t_boot)) ms, total $((t_end - t_start)) ms"
summary
