#!/usr/bin/env bash
# Packaging checks: builds the .deb and the .rpm with packaging/build-packages.sh, then checks
# what they contain and how they behave on paper:
#   - the example config parses (gradata --config packaging/gradata.toml status --json) and
#     lists every option the code declares;
#   - file lists with modes and owners, conffiles / %config(noreplace), control fields, the
#     maintainer scripts and RPM scriptlets, RPM requirements, the same binary in both packages;
#   - lintian on the .deb reports no error;
#   - systemd-analyze verify of the packaged units (the per-user ones with --user) prints nothing
#     at all, and
#     systemd-analyze security rates gradata.service at 2.0 or better. Both run in a private mount
#     namespace (tmpfs over /run, the package's /usr overlaid on the host's), never against the
#     host's /run.
# How the packages behave once installed under a real systemd is tests/e2e/run.sh's job.
# Needs root (tool installs, unshare, mount). Prints "N passed, N failed"; exits non-zero on any
# failure. Usage: bash tests/packaging.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# shellcheck source=tests/lib/checks.sh
source tests/lib/checks.sh

work=$(mktemp -d /tmp/gradata-packaging.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- build ---------------------------------------------------------------------------------
echo "== build (packaging/build-packages.sh)"
if ! bash packaging/build-packages.sh 2>&1 | tee "$work/build.log"; then
    nok "packaging/build-packages.sh failed"
    summary || exit 1
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
# The example is exactly what the option declarations generate (every option, its default and
# its variable); `gradata generate config` prints it from the same table the loader reads.
"${clean_env[@]}" "$bin" generate config >"$work/generated.toml"
check "the example config is what \`gradata generate config\` prints" \
    cmp -s "$work/generated.toml" packaging/gradata.toml
options=$(grep -c 'GRADATA_[A-Z_]*' "$work/generated.toml")
check "the generated example documents every option's variable ($options lines)" \
    test "$options" -gt 20

# --- .deb ------------------------------------------------------------------------------------
echo "== deb: $deb"
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $1, $2, $6 }' | sort >"$work/deb-files"
cat >"$work/deb-expected" <<'EOF'
-rw-r--r-- 0/0 ./etc/gradata/gradata.toml
-rw-r--r-- 0/0 ./usr/lib/systemd/system/gradata-unix.socket
-rw-r--r-- 0/0 ./usr/lib/systemd/system/gradata.service
-rw-r--r-- 0/0 ./usr/lib/systemd/system/gradata.socket
-rw-r--r-- 0/0 ./usr/lib/systemd/user/gradata.service
-rw-r--r-- 0/0 ./usr/lib/systemd/user/gradata.socket
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
for script in preinst postinst prerm postrm; do
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
    sh -c 'sed -n "/if \[ -n \"\$2\" \]; then/,/^    fi\$/p" "$1" | grep -q "try-restart gradata.service"' \
    sh "$work/deb-control/postinst"
check "preinst notes what the socket units listen on, on upgrade only" \
    sh -c 'grep -q "\[ \"\$1\" = upgrade \]" "$1" && grep -q "systemctl show -P Listen" "$1"' \
    sh "$work/deb-control/preinst"
check "postinst restarts the socket units whose addresses changed, then drops the note" \
    sh -c 'grep -q "deb-systemd-invoke restart \$changed" "$1" &&
           grep -q "rm -f \"\$LISTEN_BEFORE\"" "$1"' sh "$work/deb-control/postinst"
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
for unit in gradata.service gradata.socket; do
    check "packaged /usr/lib/systemd/user/$unit is systemd/user/$unit" \
        cmp -s "$work/deb-root/usr/lib/systemd/user/$unit" "systemd/user/$unit"
done
check "the package does not enable the per-user units (no deb-systemd-helper --user, no global enable)" \
    sh -c '! grep -vhE "^[[:space:]]*#" "$1"/* | grep -qE -- "--(user|global)([[:space:]]|\$)"' sh "$work/deb-control"
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
-rw-r--r-- root:root /usr/lib/systemd/user/gradata.service
-rw-r--r-- root:root /usr/lib/systemd/user/gradata.socket
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
check "%pre notes what the socket units listen on, on upgrade only (\$1 -ge 2)" \
    bash -c 'grep -q "\"\$1\" -ge 2" <<<"$1" && grep -q "systemctl show -P Listen" <<<"$1"' \
    sh "$(scriptlet preinstall)"
check "%posttrans restarts the socket units whose addresses changed" \
    bash -c 'grep -q "systemctl restart \$changed" <<<"$1" &&
             grep -q "rm -f /run/gradata.listen-before-upgrade" <<<"$1"' sh "$(scriptlet posttrans)"
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
               usr/lib/systemd/system/gradata.socket usr/lib/systemd/system/gradata-unix.socket \
               usr/lib/systemd/user/gradata.service usr/lib/systemd/user/gradata.socket; do
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
    # The per-user units, as a user manager loads them (--user: user search paths and
    # specifiers; it needs a runtime directory, here in the private /run).
    mkdir -p /run/user/0
    XDG_RUNTIME_DIR=/run/user/0 systemd-analyze --user verify \
        /usr/lib/systemd/user/gradata.socket /usr/lib/systemd/user/gradata.service \
        >"$2/verify-user.out" 2>&1 && echo 0 >"$2/verify-user.rc" || echo $? >"$2/verify-user.rc"
    systemd-analyze security --offline=yes /usr/lib/systemd/system/gradata.service \
        >"$2/security.out" 2>&1 && echo 0 >"$2/security.rc" || echo $? >"$2/security.rc"
' sh "$work/deb-root" "$work/analyze" || true
if [ "$(cat "$work/analyze/verify.rc" 2>/dev/null)" = 0 ] && [ ! -s "$work/analyze/verify.out" ]; then
    ok "systemd-analyze verify of the three units: exit 0, no output"
else
    nok "systemd-analyze verify (exit $(cat "$work/analyze/verify.rc" 2>/dev/null)):"
    sed 's/^/    /' "$work/analyze/verify.out" 2>/dev/null || true
fi
if [ "$(cat "$work/analyze/verify-user.rc" 2>/dev/null)" = 0 ] && [ ! -s "$work/analyze/verify-user.out" ]; then
    ok "systemd-analyze --user verify of the per-user units: exit 0, no output"
else
    nok "systemd-analyze --user verify (exit $(cat "$work/analyze/verify-user.rc" 2>/dev/null)):"
    sed 's/^/    /' "$work/analyze/verify-user.out" 2>/dev/null || true
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

summary
