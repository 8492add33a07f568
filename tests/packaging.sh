#!/usr/bin/env bash
# Packaging checks: builds the .deb and the .rpm with packaging/build-packages.sh, then checks
# what they contain and how they behave on paper:
#   - the example config parses (gradata --config packaging/gradata.toml status --json) and
#     lists every option the code declares;
#   - file lists with modes and owners, conffiles / %config(noreplace), control fields, the
#     maintainer scripts and RPM scriptlets, RPM requirements, the same binary in both packages;
#   - lintian on the .deb reports no error;
#   - systemd-analyze verify of the packaged units prints nothing at all, and
#     systemd-analyze security rates gradata.service at 2.0 or better. Both run in a private mount
#     namespace (tmpfs over /run, the package's /usr overlaid on the host's), never against the
#     host's /run;
#   - optional (GRADATA_PACKAGING_BOOT=1): install, upgrade, remove, purge and the RPM's
#     scriptlets against a real systemd booted in namespaces, the hardened service included.
# Needs root (tool installs, unshare, mount). Prints "N passed, N failed"; exits non-zero on any
# failure. Usage: bash tests/packaging.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

pass=0
fail=0
ok() { echo "ok   - $*"; pass=$((pass + 1)); }
nok() { echo "FAIL - $*"; fail=$((fail + 1)); }
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else nok "$what"; fi
}

work=$(mktemp -d /tmp/gradata-packaging.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- build ---------------------------------------------------------------------------------
echo "== build (packaging/build-packages.sh)"
if ! bash packaging/build-packages.sh 2>&1 | tee "$work/build.log"; then
    nok "packaging/build-packages.sh failed"
    echo "$pass passed, $fail failed"
    exit 1
fi
deb=$(grep '\.deb$' "$work/build.log" | tail -n 1)
rpm=$(grep '\.rpm$' "$work/build.log" | tail -n 1)
check "build printed the .deb path ($deb)" test -f "$deb"
check "build printed the .rpm path ($rpm)" test -f "$rpm"
version=$(cargo pkgid | sed 's/.*[#@]//')

# --- the example config ----------------------------------------------------------------------
echo "== example config"
bin=$(cargo metadata --no-deps --format-version 1 \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/gradata
# A clean environment: no GRADATA_* from the caller, and no host file can leak in (the key file
# is pointed at a path that does not exist).
clean_env=(env -i PATH="$PATH" HOME="$work/home" GRADATA_SYNC_API_KEY_FILE="$work/no-key")
if "${clean_env[@]}" "$bin" --config packaging/gradata.toml --data-dir "$work/data" \
    status --json >"$work/status-example.json" 2>"$work/status-example.err"; then
    ok "gradata --config packaging/gradata.toml status --json exits 0"
else
    nok "gradata --config packaging/gradata.toml status --json: $(cat "$work/status-example.err")"
fi
"${clean_env[@]}" GRADATA_CONFIG= "$bin" --data-dir "$work/data" status --json \
    >"$work/status-defaults.json" 2>/dev/null || true
check "the example config gives the same status as no config file at all" \
    cmp -s "$work/status-example.json" "$work/status-defaults.json"
# The file really is parsed: one unknown key makes it a configuration error (exit 78).
{ cat packaging/gradata.toml; echo 'unknown_key = 1'; } >"$work/bad.toml"
set +e
"${clean_env[@]}" "$bin" --config "$work/bad.toml" --data-dir "$work/data" status --json \
    >/dev/null 2>&1
rc=$?
set -e
check "an unknown key in the example is rejected with exit 78 (got $rc)" test "$rc" = 78
# Every option declared in src/config.rs (OPTIONS) is in the example, with its variable named.
# Read from the source text, so this check needs no Rust.
missing=""
while read -r key env_name; do
    section=${key%%.*}
    name=${key#*.}
    if [ "$key" = "$section" ]; then section=""; fi
    if ! awk -v want_section="$section" -v want="$name" '
            /^\[/ { gsub(/[\[\] ]/, ""); current = $0; next }
            { line = $0; sub(/^#/, "", line) }
            current == want_section && line ~ "^" want " *=" { found = 1 }
            END { exit !found }' packaging/gradata.toml; then
        missing="$missing $key"
    fi
    grep -q "$env_name" packaging/gradata.toml || missing="$missing $env_name"
done < <(awk '/key: "/ { gsub(/[",]/, ""); key = $2 } /env: "/ { gsub(/[",]/, ""); print key, $2 }' \
    src/config.rs)
check "every option of src/config.rs OPTIONS and its variable is in the example${missing:+ (missing:$missing)}" \
    test -z "$missing"

# --- .deb ------------------------------------------------------------------------------------
echo "== deb: $deb"
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $1, $2, $6 }' | sort >"$work/deb-files"
cat >"$work/deb-expected" <<'EOF'
-rw-r--r-- 0/0 ./etc/gradata/gradata.toml
-rw-r--r-- 0/0 ./usr/lib/systemd/system/gradata-unix.socket
-rw-r--r-- 0/0 ./usr/lib/systemd/system/gradata.service
-rw-r--r-- 0/0 ./usr/lib/systemd/system/gradata.socket
-rw-r--r-- 0/0 ./usr/lib/sysusers.d/gradata.conf
-rw-r--r-- 0/0 ./usr/share/bash-completion/completions/gradata
-rw-r--r-- 0/0 ./usr/share/doc/gradata/README.md
-rw-r--r-- 0/0 ./usr/share/doc/gradata/changelog.Debian.gz
-rw-r--r-- 0/0 ./usr/share/doc/gradata/copyright
-rw-r--r-- 0/0 ./usr/share/doc/gradata/operations.md
-rw-r--r-- 0/0 ./usr/share/fish/vendor_completions.d/gradata.fish
-rw-r--r-- 0/0 ./usr/share/lintian/overrides/gradata
-rw-r--r-- 0/0 ./usr/share/man/man8/gradata.8.gz
-rw-r--r-- 0/0 ./usr/share/zsh/vendor-completions/_gradata
-rwxr-xr-x 0/0 ./usr/bin/gradata
EOF
sort -o "$work/deb-expected" "$work/deb-expected"
if diff -u "$work/deb-expected" "$work/deb-files" >"$work/deb-files.diff"; then
    ok "deb file list, modes and owners (binary 0755, config and units 0644, all root 0/0)"
else
    nok "deb file list differs:"
    cat "$work/deb-files.diff"
fi
mkdir "$work/deb-control" "$work/deb-root"
dpkg-deb -e "$deb" "$work/deb-control"
dpkg-deb -x "$deb" "$work/deb-root"
check "conffiles is exactly /etc/gradata/gradata.toml" \
    test "$(cat "$work/deb-control/conffiles" 2>/dev/null)" = /etc/gradata/gradata.toml
field() { dpkg-deb -f "$deb" "$1"; }
check "control: Package gradata, Version $version-1" \
    test "$(field Package) $(field Version)" = "gradata $version-1"
check "control: Section net, Priority optional" \
    test "$(field Section) $(field Priority)" = "net optional"
check "control: Maintainer" \
    test "$(field Maintainer)" = "Gradata maintainers <maintainers@gradata.ai>"
check "control: Depends on libc6 (computed by \$auto) and procps (/bin/kill): $(field Depends)" \
    bash -c 'grep -q "libc6 (>= " <<<"$1" && grep -q "procps" <<<"$1"' bash "$(field Depends)"
for script in postinst prerm postrm; do
    check "$script is executable (0755) and valid sh" \
        sh -c 'test "$(stat -c %a "$1")" = 755 && sh -n "$1"' sh "$work/deb-control/$script"
done
has() { grep -qE -- "$2" "$work/deb-control/$1"; }
check "postinst creates the user with systemd-sysusers gradata.conf" \
    has postinst 'systemd-sysusers .*gradata\.conf'
check "postinst enables both sockets" \
    sh -c 'grep -q "^SOCKETS=\"gradata.socket gradata-unix.socket\"" "$1" &&
           grep -q "deb-systemd-helper enable \"\$unit\"" "$1"' sh "$work/deb-control/postinst"
check "postinst starts the sockets" has postinst 'deb-systemd-invoke start \$SOCKETS'
check "postinst never starts or enables gradata.service" \
    sh -c '! grep -vE "^[[:space:]]*#" "$1" | grep -qE "\\b(start|enable)\\b[^#]*gradata\\.service"' \
    sh "$work/deb-control/postinst"
check "postinst try-restarts the service on upgrade only" \
    sh -c 'grep -B3 "try-restart gradata.service" "$1" | grep -q "\[ -n \"\$2\" \]"' \
    sh "$work/deb-control/postinst"
check "prerm stops sockets then service, on remove only" \
    sh -c 'grep -A1 "\"\$1\" = remove \]; then\$" "$1" |
           grep -q "deb-systemd-invoke stop gradata.socket gradata-unix.socket gradata.service"' \
    sh "$work/deb-control/prerm"
check "postrm purge deletes the queue, /etc/gradata and the user" \
    sh -c 'sed -n "/^    purge)/,/;;/p" "$1" > "$1.purge" &&
           grep -q "rm -rf /var/lib/gradata /etc/gradata" "$1.purge" &&
           grep -q "userdel gradata" "$1.purge"' sh "$work/deb-control/postrm"
check "postrm remove keeps /var/lib/gradata" \
    sh -c '! sed -n "/^    remove)/,/;;/p" "$1" | grep -q /var/lib/gradata' \
    sh "$work/deb-control/postrm"
check "packaged binary runs: $("$work/deb-root/usr/bin/gradata" --version 2>&1)" \
    sh -c '"$1" --version >/dev/null' sh "$work/deb-root/usr/bin/gradata"
check "packaged config is packaging/gradata.toml" \
    cmp -s "$work/deb-root/etc/gradata/gradata.toml" packaging/gradata.toml
for unit in gradata.service gradata.socket gradata-unix.socket; do
    check "packaged $unit is systemd/$unit" \
        cmp -s "$work/deb-root/usr/lib/systemd/system/$unit" "systemd/$unit"
done
check "man page gradata(8) renders without warnings" \
    sh -c 'out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$1" 2>&1 >/dev/null) &&
           test -z "$out"' sh "$work/deb-root/usr/share/man/man8/gradata.8.gz"
check "completions name the command" \
    grep -q gradata "$work/deb-root/usr/share/bash-completion/completions/gradata" \
    "$work/deb-root/usr/share/zsh/vendor-completions/_gradata" \
    "$work/deb-root/usr/share/fish/vendor_completions.d/gradata.fish"

echo "== lintian"
set +e
lintian --fail-on error --display-info --show-overrides --tag-display-limit 0 "$deb" >"$work/lintian.out" 2>&1
rc=$?
set -e
sed 's/^/    /' "$work/lintian.out"
check "lintian --fail-on error: no errors (E: $(grep -c '^E:' "$work/lintian.out"), W: $(grep -c '^W:' "$work/lintian.out"), I: $(grep -c '^I:' "$work/lintian.out"))" \
    test "$rc" = 0

# --- .rpm ------------------------------------------------------------------------------------
echo "== rpm: $rpm"
rpm -qlpv "$rpm" | awk '$1 !~ /^d/ { print $1, $3 ":" $4, $9 }' | sort >"$work/rpm-files"
cat >"$work/rpm-expected" <<'EOF'
-rw-r--r-- root:root /etc/gradata/gradata.toml
-rw-r--r-- root:root /usr/lib/systemd/system/gradata-unix.socket
-rw-r--r-- root:root /usr/lib/systemd/system/gradata.service
-rw-r--r-- root:root /usr/lib/systemd/system/gradata.socket
-rw-r--r-- root:root /usr/lib/sysusers.d/gradata.conf
-rw-r--r-- root:root /usr/share/bash-completion/completions/gradata
-rw-r--r-- root:root /usr/share/doc/gradata/README.md
-rw-r--r-- root:root /usr/share/doc/gradata/operations.md
-rw-r--r-- root:root /usr/share/fish/vendor_completions.d/gradata.fish
-rw-r--r-- root:root /usr/share/licenses/gradata/LICENSE
-rw-r--r-- root:root /usr/share/man/man8/gradata.8.gz
-rw-r--r-- root:root /usr/share/zsh/site-functions/_gradata
-rwxr-xr-x root:root /usr/bin/gradata
EOF
sort -o "$work/rpm-expected" "$work/rpm-expected"
if diff -u "$work/rpm-expected" "$work/rpm-files" >"$work/rpm-files.diff"; then
    ok "rpm -qlpv: file list, modes and owners"
else
    nok "rpm file list differs:"
    cat "$work/rpm-files.diff"
fi
check "rpm -qp --configfiles is exactly /etc/gradata/gradata.toml" \
    test "$(rpm -qp --configfiles "$rpm")" = /etc/gradata/gradata.toml
check "gradata.toml is %config(noreplace)" \
    sh -c 'rpm -qp --qf "[%{FILENAMES} %{FILEFLAGS:fflags}\n]" "$1" |
           grep -qx "/etc/gradata/gradata.toml cn"' sh "$rpm"
rpm -qp --scripts "$rpm" >"$work/rpm-scripts"
# scriptlet NAME: the body of one scriptlet, as rpm -qp --scripts prints it.
scriptlet() { awk -v want="$1 scriptlet" 'index($0, want) == 1 { on = 1; next } / scriptlet / { on = 0 } on' "$work/rpm-scripts"; }
check "%post creates the user and enables + starts the sockets on first install" \
    bash -c 'grep -q "systemd-sysusers gradata.conf" <<<"$1" &&
           grep -q "enable gradata.socket gradata-unix.socket" <<<"$1" &&
           grep -q "start gradata.socket gradata-unix.socket" <<<"$1" &&
           ! grep -q "gradata.service" <<<"$1"' sh "$(scriptlet postinstall)"
check "%preun stops sockets and service on erase only (\$1 -eq 0)" \
    bash -c 'grep -q "\"\$1\" -eq 0" <<<"$1" &&
           grep -q "stop gradata.socket gradata-unix.socket gradata.service" <<<"$1"' \
    sh "$(scriptlet preuninstall)"
check "%postun try-restarts the service on upgrade only (\$1 -ge 1)" \
    bash -c 'grep -q "\"\$1\" -ge 1" <<<"$1" && grep -q "try-restart gradata.service" <<<"$1" &&
           ! grep -q "/var/lib/gradata" <<<"$1"' sh "$(scriptlet postuninstall)"
rpm -qpR "$rpm" >"$work/rpm-requires"
check "rpm -qpR: glibc symbols computed from the ELF ($(grep -c 'libc.so.6' "$work/rpm-requires") libc.so.6 entries)" \
    grep -q 'libc.so.6(GLIBC_' "$work/rpm-requires"
check "rpm -qpR: systemd for the scriptlets" grep -qx 'systemd' "$work/rpm-requires"
check "rpm -qpR: /usr/bin/kill for ExecReload=" grep -qx '/usr/bin/kill' "$work/rpm-requires"
check "rpm: version $version, release 1" \
    test "$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$rpm")" = "${version//-/\~}-1"
command -v cpio >/dev/null || { apt-get install -y -qq cpio </dev/null >/dev/null; }
mkdir "$work/rpm-root"
(cd "$work/rpm-root" && rpm2cpio "$rpm" | cpio -idm --quiet)
check "the .deb and the .rpm carry the same binary, config and units" \
    sh -c 'for f in usr/bin/gradata etc/gradata/gradata.toml usr/lib/systemd/system/gradata.service \
               usr/lib/systemd/system/gradata.socket usr/lib/systemd/system/gradata-unix.socket; do
               cmp -s "$1/$f" "$2/$f" || exit 1; done' sh "$work/deb-root" "$work/rpm-root"

# --- systemd-analyze, in a private mount namespace -----------------------------------------
echo "== systemd-analyze (private mount namespace)"
# The package's /usr is overlaid on the host's (read-only, two lower layers), so the units see
# /usr/bin/gradata and gradata(8) as installed, plus the host's targets; /run is a fresh tmpfs,
# because systemd-analyze writes /run/systemd/systemd-units-load.
mkdir "$work/analyze"
unshare --mount --propagation private /bin/sh -c '
    set -e
    mount -t tmpfs -o mode=755 tmpfs /run
    mount -t overlay overlay -o "lowerdir=$1/usr:/usr" /usr
    cd /
    units="/usr/lib/systemd/system/gradata.socket /usr/lib/systemd/system/gradata-unix.socket /usr/lib/systemd/system/gradata.service"
    systemd-analyze verify $units >"$2/verify.out" 2>&1 && echo 0 >"$2/verify.rc" || echo $? >"$2/verify.rc"
    systemd-analyze security --offline=yes /usr/lib/systemd/system/gradata.service \
        >"$2/security.out" 2>&1 && echo 0 >"$2/security.rc" || echo $? >"$2/security.rc"
' sh "$work/deb-root" "$work/analyze" || true
if [ "$(cat "$work/analyze/verify.rc" 2>/dev/null)" = 0 ] && [ ! -s "$work/analyze/verify.out" ]; then
    ok "systemd-analyze verify of the three units: exit 0, no output"
else
    nok "systemd-analyze verify (exit $(cat "$work/analyze/verify.rc" 2>/dev/null)):"
    sed 's/^/    /' "$work/analyze/verify.out" 2>/dev/null || true
fi
exposure=$(sed -n 's/.*Overall exposure level for gradata.service: \([0-9.]*\).*/\1/p' \
    "$work/analyze/security.out" 2>/dev/null)
# Any warning printed while loading the unit (an unknown or invalid setting) is a failure too.
warnings=$(grep -vE '^(  NAME|✓|✗|→|$)' "$work/analyze/security.out" 2>/dev/null | grep -v '^[[:space:]]*$' || true)
grep -E '^(✗|→)' "$work/analyze/security.out" 2>/dev/null | sed 's/^/    /' || true
if [ -n "$exposure" ] && awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' && [ -z "$warnings" ]; then
    ok "systemd-analyze security --offline=yes gradata.service: exposure $exposure (<= 2.0)"
else
    nok "systemd-analyze security: exposure '${exposure:-none}' (must be <= 2.0)${warnings:+; warnings: $warnings}"
fi

# --- optional: install, upgrade, remove and purge under a real systemd ----------------------
# GRADATA_PACKAGING_BOOT=1 boots systemd 252 as PID 1 of a throwaway Debian 12 root file system
# in fresh pid/mount/uts/ipc/net/cgroup namespaces (recipe: systemd-testing.md §2.5; the host's
# /run, /dev, network and sysctls are untouched) and runs the packages' scripts against it: the
# hardened unit must start, write /var/lib/gradata, read its credential, resolve a name and
# POST to a (fake, loopback) ingest server. Needs mmdebstrap and the Debian mirror (rootfs ~30 s;
# ROOTFS_TAR=file.tar.zst reuses a saved one); about a minute of checks.
boot_checks() {
    # bp (the unshare process), pid1 and cg are global: the EXIT trap uses them after return.
    local state t out n
    root="$work/boot/root"
    bp=""
    pid1=""
    cg=""
    mkdir -p "$root"
    in_c() { nsenter -t "$pid1" -m -u -i -n -p -C "$@"; }
    c_sh() { in_c sh -c "$1"; }
    active() { in_c systemctl is-active "$1" 2>/dev/null || true; }
    boot_cleanup() {
        if [ -n "$bp" ] && kill -0 "$bp" 2>/dev/null; then
            [ -n "$pid1" ] && kill -s RTMIN+4 "$pid1" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$bp" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$bp" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$bp" 2>/dev/null || break; sleep 0.1; done
        fi
        if [ -n "$cg" ] && [ -d "$cg" ]; then
            for _ in $(seq 100); do grep -q 'populated 0' "$cg/cgroup.events" && break; sleep 0.1; done
            find "$cg" -depth -type d -exec rmdir {} \; || true
        fi
        if [ "$fail" != 0 ] && [ -d "$root/var/log/journal" ]; then
            echo "    journal of the container (last 60 lines):"
            journalctl -D "$root/var/log/journal" --no-pager -o short-precise 2>/dev/null | tail -n 60 | sed 's/^/    /'
        fi
        rm -rf "$work"
    }
    trap boot_cleanup EXIT

    if [ -n "${ROOTFS_TAR:-}" ] && [ -f "$ROOTFS_TAR" ]; then
        tar --zstd -xpf "$ROOTFS_TAR" -C "$root" --numeric-owner
    else
        command -v mmdebstrap >/dev/null || apt-get install -y -qq mmdebstrap </dev/null >/dev/null
        # procps for /bin/kill (a dependency of the package, which dpkg -i does not fetch);
        # python3 runs the fake ingest and DNS servers; rpm for the RPM's scriptlets.
        mmdebstrap --quiet --variant=minbase \
            --include=systemd,systemd-sysv,dbus,procps,curl,sqlite3,python3,rpm \
            --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            bookworm "$root" </dev/null
    fi
    echo it-container >"$root/etc/hostname"
    : >"$root/etc/machine-id"
    # minbase has no /etc/hosts; real systems do (resolving "localhost" needs it).
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
    printf 'nameserver 127.0.0.1\n' >"$root/etc/resolv.conf"
    ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"
    cp "$deb" "$root/root/gradata.deb"
    cp "$deb2" "$root/root/gradata-2.deb"
    cp "$rpm" "$root/root/gradata.rpm"
    cat >"$root/root/fake-ingest.py" <<'PY'
import http.server
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        with open('/root/ingest.log', 'ab') as log:
            log.write(self.headers.get('Authorization', '-').encode() + b' ' + body + b'\n')
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(b'{"ok":true}')
http.server.HTTPServer(('127.0.0.1', 9999), Handler).serve_forever()
PY
    # Answers every A query with 127.0.0.1 (and AAAA with nothing): a name lookup over UDP.
    cat >"$root/root/fake-dns.py" <<'PY'
import socket, struct
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(('127.0.0.1', 53))
while True:
    query, client = server.recvfrom(512)
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    qtype, = struct.unpack('>H', query[end + 1:end + 3])
    question = query[12:end + 5]
    answer = b''
    if qtype == 1:
        answer = b'\xc0\x0c' + struct.pack('>HHIH', 1, 1, 60, 4) + socket.inet_aton('127.0.0.1')
    header = struct.pack('>HHHHHH', struct.unpack('>H', query[:2])[0], 0x8180, 1, 1 if answer else 0, 0, 0)
    server.sendto(header + question + answer, client)
PY

    local cgroot=/sys/fs/cgroup/unified
    [ -d "$cgroot" ] || cgroot=/sys/fs/cgroup
    cg=$cgroot/gradata-packaging.$$
    mkdir "$cg"
    # `mount --make-rshared /` before systemd starts: systemd leaves propagation alone in a
    # container, and without shared propagation the credentials it mounts for a service
    # (LoadCredential=) never become visible to the service (an empty $CREDENTIALS_DIRECTORY).
    (
        echo $BASHPID >"$cg/cgroup.procs"
        exec unshare --pid --fork --kill-child --mount --uts --ipc --net --cgroup --propagation private \
            env -i container=other TERM=dumb PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            /bin/sh -euc '
            R=$0
            mount --bind "$R" "$R"
            mount -t tmpfs -o mode=755,size=16m,nosuid tmpfs "$R/dev"
            for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
                n=${d%%:*}; mm=${d#*:}; mknod -m 666 "$R/dev/$n" c ${mm%:*} ${mm#*:}
            done
            mknod -m 600 "$R/dev/console" c 1 3
            mkdir -m 755 "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
            mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
            ln -s pts/ptmx "$R/dev/ptmx"; ln -s /proc/self/fd "$R/dev/fd"
            ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"
            ln -s /proc/self/fd/2 "$R/dev/stderr"
            mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
            mount --bind "$R/proc/sys" "$R/proc/sys"; mount -o remount,bind,ro "$R/proc/sys"
            mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
            mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
            cd "$R"; mkdir -p .oldroot; pivot_root . .oldroot
            exec /bin/sh -c "umount -l /.oldroot && rmdir /.oldroot && mount --make-rshared / && exec /lib/systemd/systemd"
        ' "$root"
    ) </dev/null >"$work/boot/boot.log" 2>&1 &
    bp=$!
    for _ in $(seq 200); do
        pid1=$(ps -o pid= --ppid "$bp" | tr -d ' ' || true)
        [ -n "$pid1" ] && [ "$(cat "/proc/$pid1/comm" 2>/dev/null)" = systemd ] && break
        sleep 0.05
    done
    state=
    for _ in $(seq 300); do
        state=$(timeout 60 nsenter -t "$pid1" -m -u -i -n -p -C systemctl is-system-running --wait 2>/dev/null || true)
        case "$state" in running | degraded | maintenance | stopping) break ;; esac
        sleep 0.1
    done
    check "systemd booted in the container ($state)" test "$state" = running

    # Install: user, sockets enabled and listening, the service left alone.
    check "dpkg -i" c_sh 'dpkg -i /root/gradata.deb >/dev/null'
    check "user and group gradata exist" c_sh 'getent passwd gradata >/dev/null && getent group gradata >/dev/null'
    for unit in gradata.socket gradata-unix.socket; do
        check "$unit enabled and listening after install" \
            test "$(in_c systemctl is-enabled $unit) $(active $unit)" = "enabled active"
    done
    check "gradata.service not started by the install" test "$(active gradata.service)" = inactive
    check "/run/gradata/gradata.sock is srw-rw---- root:gradata" \
        test "$(c_sh 'stat -c "%A %U:%G" /run/gradata/gradata.sock')" = "srw-rw---- root:gradata"

    # Activation under the hardened unit, on both sockets.
    out=$(c_sh 'curl -sS -m 60 http://127.0.0.1:8765/health' 2>&1 || true)
    check "the first TCP connection starts the service: ${out:0:80}" test "$(active gradata.service)" = active
    check "service runs as gradata; StatusText '$(in_c systemctl show -P StatusText gradata.service)'" \
        test "$(c_sh 'stat -c %U /proc/$(systemctl show -P MainPID gradata.service)')" = gradata
    check "LISTEN_FDNAMES names both sockets" \
        c_sh 'tr "\0" "\n" </proc/$(systemctl show -P MainPID gradata.service)/environ | grep -qE "^LISTEN_FDNAMES=(unix:http|http:unix)$"'
    check "it created its queue in /var/lib/gradata (drwx------ gradata)" \
        c_sh 'test "$(stat -c "%A %U" /var/lib/gradata)" = "drwx------ gradata" && test "$(stat -c %U /var/lib/gradata/system.db)" = gradata'
    check "the unix socket answers" c_sh 'curl -sSf -m 10 --unix-socket /run/gradata/gradata.sock http://localhost/health >/dev/null'
    n=$(c_sh 'journalctl -u gradata MESSAGE_ID=5f0b3a4c9d2e4e7a8c1f6b2d3e4a5b6c -o cat --no-pager | wc -l')
    check "journalctl -u gradata MESSAGE_ID=…: the startup drain record ($n)" test "$n" -ge 1
    check "no key file: the SetCredential= fallback keeps the service up, sync disabled" \
        c_sh 'journalctl -u gradata -o cat --no-pager | grep -q "cloud sync is disabled"'

    # The key as a credential, a name lookup over UDP, a POST to the ingest server.
    c_sh 'systemd-run --quiet --unit fake-ingest python3 /root/fake-ingest.py &&
          systemd-run --quiet --unit fake-dns python3 /root/fake-dns.py' || true
    c_sh 'install -m 0600 /dev/stdin /etc/gradata/api-key <<EOF
credential-key
EOF' || true
    c_sh 'mkdir -p /etc/systemd/system/gradata.service.d && printf "[Service]\nEnvironment=GRADATA_CLOUD_INGEST_URL=http://localhost:9999/ingest\nWatchdogSec=3s\n" >/etc/systemd/system/gradata.service.d/test.conf && systemctl daemon-reload && systemctl stop gradata.service' 2>/dev/null || true
    c_sh "sqlite3 /var/lib/gradata/system.db \"INSERT INTO sync_queue(payload_json, kind, enqueued_at, event_id) VALUES('{\\\"brain_id\\\":\\\"b\\\",\\\"event_id\\\":\\\"01JPACKAGINGTEST000000000A\\\",\\\"event\\\":{\\\"n\\\":1}}', 'event', strftime('%s','now'), '01JPACKAGINGTEST000000000A')\"" || true
    check "systemctl start with a queued row" in_c systemctl start gradata.service
    check "the startup drain POSTed it with the key from LoadCredential= (localhost via /etc/hosts)" \
        c_sh 'grep -q "^Bearer credential-key .*01JPACKAGINGTEST000000000A" /root/ingest.log'
    # Stopped first: a restart would let the old process's final drain deliver the row below.
    c_sh 'systemctl stop gradata.service && sed -i "s|^Environment=GRADATA_CLOUD_INGEST_URL=.*|Environment=GRADATA_CLOUD_INGEST_URL=https://ingest.example.test:9999/ingest|" /etc/systemd/system/gradata.service.d/test.conf && systemctl daemon-reload' 2>/dev/null || true
    c_sh "sqlite3 /var/lib/gradata/system.db \"INSERT INTO sync_queue(payload_json, kind, enqueued_at, event_id) VALUES('{\\\"brain_id\\\":\\\"b\\\",\\\"event_id\\\":\\\"01JPACKAGINGTEST000000000B\\\",\\\"event\\\":{\\\"n\\\":2}}', 'event', strftime('%s','now'), '01JPACKAGINGTEST000000000B')\"" || true
    in_c systemctl start gradata.service || true
    # The fake server speaks plain HTTP, so TLS fails; what matters is that the name resolved
    # over DNS (UDP) inside the sandbox and the connection was made.
    check "a DNS name resolves inside the sandbox (then TLS meets plain HTTP, as expected)" \
        c_sh 'gradata --data-dir /var/lib/gradata status --json | grep "last_error" | grep -v "dns error" | grep -q "ingest.example.test"'
    check "systemctl reload (SIGHUP through /bin/kill)" in_c systemctl reload gradata.service
    t=$(in_c systemctl show -P MainPID gradata.service)
    sleep 8
    check "watchdog fed under the sandbox (WatchdogSec=3s, same process 8 s later)" \
        test "$(in_c systemctl show -P MainPID gradata.service) $(active gradata.service)" = "$t active"

    # Upgrade, remove, reinstall, purge.
    t=$(in_c systemctl show -P MainPID gradata.service)
    check "upgrade to revision 2 (dpkg -i)" c_sh 'dpkg -i /root/gradata-2.deb >/dev/null'
    check "upgrade restarted the running service ($t -> $(in_c systemctl show -P MainPID gradata.service))" \
        test "$(in_c systemctl show -P MainPID gradata.service)" != "$t" -a "$(active gradata.service)" = active
    check "sockets still listening after the upgrade" \
        test "$(active gradata.socket) $(active gradata-unix.socket)" = "active active"
    in_c systemctl stop gradata.service 2>/dev/null || true
    check "downgrade to revision 1" c_sh 'dpkg -i /root/gradata.deb >/dev/null 2>&1'
    check "a stopped service stays stopped across an upgrade" test "$(active gradata.service)" = inactive
    check "dpkg -r" c_sh 'dpkg -r gradata >/dev/null'
    check "remove stopped sockets and service" \
        test "$(active gradata.socket) $(active gradata-unix.socket) $(active gradata.service)" = "inactive inactive inactive"
    check "remove kept the queue, the key and the user" \
        c_sh 'test -f /var/lib/gradata/system.db && test -f /etc/gradata/api-key && getent passwd gradata >/dev/null'
    check "reinstall: the sockets listen again" \
        sh -c 'nsenter -t "$1" -m -u -i -n -p -C dpkg -i /root/gradata.deb >/dev/null &&
               test "$(nsenter -t "$1" -m -u -i -n -p -C systemctl is-active gradata.socket)" = active' sh "$pid1"
    check "dpkg -P" c_sh 'dpkg -P gradata >/dev/null'
    check "purge deleted the queue, /etc/gradata, the user and the group" \
        c_sh '! test -e /var/lib/gradata && ! test -e /etc/gradata && ! getent passwd gradata && ! getent group gradata'

    # The RPM's scriptlets against the same systemd (rpm --nodeps: the Debian root has no RPM db).
    c_sh 'rm -rf /etc/systemd/system/gradata.service.d; systemctl daemon-reload' || true
    check "rpm -ivh --nodeps" c_sh 'rpm -ivh --nodeps --quiet /root/gradata.rpm >/dev/null'
    check "rpm %post: both sockets enabled and listening, service not started" \
        test "$(in_c systemctl is-enabled gradata.socket) $(active gradata.socket) $(active gradata-unix.socket) $(active gradata.service)" = "enabled active active inactive"
    out=$(c_sh 'curl -sS -m 60 http://127.0.0.1:8765/health' 2>&1 || true)
    check "rpm: the first connection starts the service" test "$(active gradata.service)" = active
    check "rpm -e" c_sh 'rpm -e --nodeps gradata >/dev/null'
    check "rpm %preun: sockets and service stopped, queue and user kept" \
        sh -c 'test "$1" = "inactive inactive inactive" &&
               nsenter -t "$2" -m -u -i -n -p -C sh -c "test -d /var/lib/gradata && getent passwd gradata >/dev/null"' \
        sh "$(active gradata.socket) $(active gradata-unix.socket) $(active gradata.service)" "$pid1"
}

if [ "${GRADATA_PACKAGING_BOOT:-0}" = 1 ]; then
    echo "== install, upgrade, remove, purge under systemd (GRADATA_PACKAGING_BOOT=1)"
    deb2="$work/gradata_${version}-2.deb"
    cargo deb --no-build --deb-revision 2 --output "$deb2" >/dev/null 2>&1
    boot_checks
else
    echo "== (skipped: install/upgrade/remove under a real systemd; set GRADATA_PACKAGING_BOOT=1)"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
