#!/usr/bin/env bash
# The browser of the browser tier, packed for the QEMU guest: Debian's chromium-headless-shell
# (installed on the host by scripts/setup.sh --all) with every library it loads (its ldd
# closure), its data files and one font, as a gzip'd cpio archive that tests/browser/run.sh
# appends to the kernel-path guest's initramfs. Cached: the archive is rebuilt only when the
# package version or this script changes.
#
#   tests/browser/build-browser.sh [CACHE_DIR]     default: target/qemu-guest
#
# Output: CACHE_DIR/browser.cpio.gz (~140 MB; ~290 MB unpacked in the guest's RAM).
set -euo pipefail
cd "$(dirname "$0")/../.."

cache=$(realpath -m "${1:-target/qemu-guest}")
mkdir -p "$cache"
dir=/usr/lib/chromium
shell=$dir/chromium-headless-shell
version=$(dpkg-query -W -f='${Version}' chromium-headless-shell 2>/dev/null) || {
    echo "build-browser: chromium-headless-shell is not installed (scripts/setup.sh --all installs it)" >&2
    exit 1
}
key=$( { echo "$version"; cat "$0"; } | sha256sum | cut -d' ' -f1)
if [ -s "$cache/browser.cpio.gz" ] && [ "$(cat "$cache/browser.stamp" 2>/dev/null)" = "$key" ]; then
    echo "build-browser: cached chromium-headless-shell $version in $cache is current"
    exit 0
fi

start=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
opt=$work/root/opt/chs
mkdir -p "$opt/locales" "$work/root/usr/share/fonts/truetype" "$work/root/etc"
# The binary and what it loads beside itself: resources, V8 snapshots, ICU data, the software
# GL/Vulkan it falls back to with --disable-gpu, and one locale.
cp -L "$shell" "$dir"/*.pak "$dir"/*.bin "$dir/icudtl.dat" "$dir"/lib*.so* "$dir"/*.json "$opt/"
cp -L "$dir/locales/en-US.pak" "$opt/locales/"
# Every shared library it links, from the host (the guest runs the same Debian release).
ldd "$shell" | awk '$3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
    while read -r lib; do cp -L "$lib" "$opt/"; done
# A page needs a font to lay out; fontconfig finds DejaVu through /etc/fonts.
cp -rL /etc/fonts "$work/root/etc/"
cp -rL /usr/share/fonts/truetype/dejavu "$work/root/usr/share/fonts/truetype/"
strip --strip-unneeded "$opt/chromium-headless-shell" 2>/dev/null || true
(cd "$work/root" && find . -mindepth 1 | sed 's|^\./||' | cpio -o -H newc --quiet) |
    gzip -1 >"$cache/browser.cpio.gz.tmp"
mv "$cache/browser.cpio.gz.tmp" "$cache/browser.cpio.gz"
echo "$key" >"$cache/browser.stamp"
echo "build-browser: chromium-headless-shell $version packed in $(($(date +%s) - start)) s," \
    "$(du -m "$cache/browser.cpio.gz" | cut -f1) MB"
