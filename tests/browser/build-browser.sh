#!/usr/bin/env bash
# The browsers of the browser tier, packed for the QEMU guest: Debian's chromium-headless-shell
# and firefox-esr (installed on the host by scripts/setup.sh --all), each with every library it
# loads (its ldd closure, plus what it opens at run time), its data files and one font, as a
# gzip'd cpio archive that tests/browser/run.sh appends to the kernel-path guest's initramfs.
# Cached: an archive is rebuilt only when its package version or this script changes.
#
#   tests/browser/build-browser.sh ENGINE [CACHE_DIR]   ENGINE: chromium | firefox
#                                                       default CACHE_DIR: target/qemu-guest
#
# Output: CACHE_DIR/ENGINE.cpio.gz (chromium ~150 MB, ~290 MB unpacked in the guest's RAM).
set -euo pipefail
cd "$(dirname "$0")/../.."

engine=${1:?usage: build-browser.sh chromium|firefox [CACHE_DIR]}
cache=$(realpath -m "${2:-target/qemu-guest}")
mkdir -p "$cache"
case $engine in
    chromium) package=chromium-headless-shell ;;
    firefox) package=firefox-esr ;;
    *) echo "build-browser: unknown engine $engine" >&2; exit 2 ;;
esac
version=$(dpkg-query -W -f='${Version}' "$package" 2>/dev/null) || {
    echo "build-browser: $package is not installed (scripts/setup.sh --all installs it)" >&2
    exit 1
}
archive=$cache/$engine.cpio.gz
key=$( { echo "$version"; cat "$0"; } | sha256sum | cut -d' ' -f1)
if [ -s "$archive" ] && [ "$(cat "$cache/$engine.stamp" 2>/dev/null)" = "$key" ]; then
    echo "build-browser: cached $package $version in $cache is current"
    exit 0
fi

start=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/usr/share/fonts/truetype" "$root/etc"
# closure DEST FILE...: copy the shared libraries FILEs link (from this host, which runs the same
# Debian release as the guest) into DEST, leaving out those already beside them.
closure() {
    local dest=$1
    shift
    ldd "$@" 2>/dev/null | awk '$3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u |
        while read -r lib; do
            [ -e "$dest/$(basename "$lib")" ] || cp -L "$lib" "$dest/"
        done
}

case $engine in
chromium)
    dir=/usr/lib/chromium
    opt=$root/opt/chs
    mkdir -p "$opt/locales"
    # The binary and what it loads beside itself: resources, V8 snapshots, ICU data, the
    # software GL/Vulkan it falls back to with --disable-gpu, and one locale.
    cp -L "$dir/chromium-headless-shell" "$dir"/*.pak "$dir"/*.bin "$dir/icudtl.dat" \
        "$dir"/lib*.so* "$dir"/*.json "$opt/"
    cp -L "$dir/locales/en-US.pak" "$opt/locales/"
    closure "$opt" "$dir/chromium-headless-shell"
    strip --strip-unneeded "$opt/chromium-headless-shell" 2>/dev/null || true
    ;;
firefox)
    dir=/usr/lib/firefox-esr
    opt=$root/opt/firefox
    mkdir -p "$opt/lib"
    # Firefox's own directory (libxul, its own NSS, omni.ja), without what a headless test
    # never starts; the system libraries go to lib/, so Firefox's NSS wins over Debian's.
    cp -rL "$dir/." "$opt/"
    rm -rf "$opt/crashreporter" "$opt/crashhelper" "$opt/pingsender" "$opt/gmp-clearkey"
    # ldd resolves Firefox's own libraries only with its directory on the path.
    LD_LIBRARY_PATH=$dir closure "$opt/lib" "$dir/firefox-esr" "$dir"/*.so
    for own in "$dir"/*.so; do rm -f "$opt/lib/$(basename "$own")"; done
    # Opened at run time, so not in any ldd closure: libudev for USB security keys (the
    # authenticator crate enumerates hidraw through it).
    cp -L /lib/x86_64-linux-gnu/libudev.so.1 "$opt/lib/"
    ;;
esac
# A page needs a font to lay out; fontconfig finds DejaVu through /etc/fonts.
cp -rL /etc/fonts "$root/etc/"
cp -rL /usr/share/fonts/truetype/dejavu "$root/usr/share/fonts/truetype/"
(cd "$root" && find . -mindepth 1 | sed 's|^\./||' | cpio -o -H newc --quiet) | gzip -1 >"$archive.tmp"
mv "$archive.tmp" "$archive"
echo "$key" >"$cache/$engine.stamp"
echo "build-browser: $package $version packed in $(($(date +%s) - start)) s," \
    "$(du -m "$archive" | cut -f1) MB"
