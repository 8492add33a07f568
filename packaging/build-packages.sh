#!/usr/bin/env bash
# Builds gradata's .deb and .rpm from a clean clone, into target/packages/, and prints their paths.
#
#   bash packaging/build-packages.sh
#
# 1. installs what is missing: Debian packages (rpm for rpmbuild, lintian, man-db, …) and
#    cargo-deb (`cargo install --locked`, only when absent);
# 2. builds the release binary once (`cargo build --release --locked`);
# 3. generates the man page gradata(8) and the bash/zsh/fish completions into target/assets/
#    with `gradata generate` (from the same clap definition that parses the command line);
# 4. builds the .deb with cargo-deb (metadata: [package.metadata.deb] in Cargo.toml, maintainer
#    scripts in debian/) and the .rpm with rpmbuild (packaging/gradata.spec), both from that one
#    binary.
#
# Idempotent (old packages are replaced, nothing else is touched), no standard input, needs root
# only to install missing tools. Debian/Ubuntu hosts. SOURCE_DATE_EPOCH defaults to the last
# commit's time, so two builds of one commit give the same file timestamps.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

ms() { echo $(( $(date +%s%N) / 1000000 )); }
step() { echo "== $*"; }
t_start=$(ms)

# --- 1. tools --------------------------------------------------------------------------------
step "tools"
missing=()
command -v rpmbuild >/dev/null || missing+=(rpm)
command -v lintian >/dev/null || missing+=(lintian)
command -v man >/dev/null || missing+=(man-db)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
command -v gzip >/dev/null || missing+=(gzip)
command -v strip >/dev/null || missing+=(binutils)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb"
    cargo install --locked --quiet cargo-deb --version '^3.8' </dev/null
fi
echo "cargo-deb $(cargo deb --version 2>/dev/null | awk '{print $NF}'), $(rpmbuild --version)"
t_tools=$(ms)

# --- 2. the release binary, once ------------------------------------------------------------
step "release build"
cargo build --release --locked --bin gradata </dev/null
# The real target directory (CARGO_TARGET_DIR or a config may move it).
target_dir=$(cargo metadata --no-deps --format-version 1 </dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target_dir/release/gradata"
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }
# `cargo pkgid` prints path+file:///…#gradata@0.1.0 (or …#0.1.0).
version=$(cargo pkgid </dev/null | sed 's/.*[#@]//')
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
t_build=$(ms)

# --- 3. man page and completions -------------------------------------------------------------
step "assets"
# Always under the repository's target/ (the deb metadata names these paths literally).
assets="$repo/target/assets"
mkdir -p "$assets/completions"
"$bin" generate man | gzip -9n > "$assets/gradata.8.gz.tmp"
mv "$assets/gradata.8.gz.tmp" "$assets/gradata.8.gz"
for shell_file in bash:gradata.bash zsh:_gradata fish:gradata.fish; do
    shell=${shell_file%%:*}
    file=${shell_file#*:}
    "$bin" generate completions "$shell" > "$assets/completions/$file.tmp"
    mv "$assets/completions/$file.tmp" "$assets/completions/$file"
done
t_assets=$(ms)

# --- 4. packages -----------------------------------------------------------------------------
out="$repo/target/packages"
mkdir -p "$out"
rm -f "$out"/gradata_*.deb "$out"/gradata-*.rpm

step "deb (cargo-deb)"
cargo deb --no-build --output "$out" </dev/null >/dev/null
deb=$(ls "$out"/gradata_*.deb)

step "rpm (rpmbuild)"
rpm_top="$repo/target/rpmbuild"
rm -rf "$rpm_top"
mkdir -p "$rpm_top"
# RPM versions cannot contain '-': a pre-release 1.2.0-rc.1 becomes 1.2.0~rc.1 (sorts before).
rpmbuild -bb --quiet \
    --define "_topdir $rpm_top" \
    --define "gradata_version ${version//-/\~}" \
    --define "gradata_src $repo" \
    --define "gradata_bin $bin" \
    --define "gradata_assets $assets" \
    --define "use_source_date_epoch_as_buildtime 1" \
    --define "clamp_mtime_to_source_date_epoch 1" \
    packaging/gradata.spec </dev/null
cp "$rpm_top"/RPMS/*/gradata-*.rpm "$out/"
rpm=$(ls "$out"/gradata-*.rpm)
t_end=$(ms)

echo "timing: tools $((t_tools - t_start)) ms, release build $((t_build - t_tools)) ms," \
    "assets $((t_assets - t_build)) ms, packages $((t_end - t_assets)) ms," \
    "total $((t_end - t_start)) ms"
echo "$deb"
echo "$rpm"
