#!/usr/bin/env bash
# Build the QEMU guest of the kernel-path test (tests/qemu/run.sh): Debian 12's stock kernel and
# an initramfs holding the real USB/IP client stack (vhci-hcd, usbip) and the real FIDO clients
# (libfido2's tools, OpenSSH). Everything comes from Debian packages that are downloaded with
# `apt-get download` and unpacked with `dpkg -x` into a cache directory; nothing is installed on
# the host. A second run with the same inputs reuses the cache: a few seconds (apt-cache looks
# up the current package versions, which are the cache key).
#
#   tests/qemu/build-guest.sh [CACHE_DIR]     default: target/qemu-guest
#
# Output: CACHE_DIR/vmlinuz and CACHE_DIR/base.cpio.gz (the client script is not part of it:
# run.sh appends its own small archive, so editing the test does not rebuild the guest).
set -euo pipefail
cd "$(dirname "$0")/../.."

cache=$(realpath -m "${1:-target/qemu-guest}")
mkdir -p "$cache"

# The kernel: the metapackage names the current ABI's image package.
kernel_meta=linux-image-amd64
# The tools the guest runs, then the libraries they load (checked below against every ELF's
# NEEDED entries, so a library missing here fails the build instead of the guest).
# bash, sudo and acl (setfacl) are for the GitHub Actions recipe, whose steps run as a user
# with sudo (examples/github-actions.yml).
tool_packages=(busybox-static usbip usb.ids fido2-tools openssh-client bash sudo acl)
lib_packages=(libc6 libudev1 libcap2 libfido2-1 libcbor0.8 libssl3 zlib1g libselinux1 libpcre2-8-0
              libtinfo6 libaudit1 libcap-ng0 libpam0g libpam-modules libacl1)
# Modules loaded in the guest (their dependencies are added from the modules' own metadata).
modules=(vhci-hcd usbhid hid-generic uhid e1000)
# What goes into the initramfs from the unpacked packages.
binaries=(bin/busybox usr/sbin/usbip usr/bin/fido2-token usr/bin/fido2-cred usr/bin/fido2-assert
          usr/bin/ssh-keygen usr/lib/openssh/ssh-sk-helper
          bin/bash bin/setfacl bin/getfacl usr/bin/sudo usr/libexec/sudo/sudoers.so
          lib/x86_64-linux-gnu/security/pam_permit.so)

apt_download() {
    # Only what is not already in the cache (the kernel package alone is ~70 MB), then drop
    # versions no longer wanted. apt-get needs package lists; a fresh machine may have none.
    local uris
    if ! uris=$(apt-get download --print-uris -qq "$@" 2>/dev/null); then
        echo "build-guest: refreshing package lists" >&2
        apt-get update -qq
        uris=$(apt-get download --print-uris -qq "$@")
    fi
    local files=() missing=() file
    while read -r _ file _; do
        files+=("$file")
    done <<<"$uris"
    for deb in "$cache"/debs/*.deb; do
        [ -e "$deb" ] || continue
        [[ " ${files[*]} " == *" $(basename "$deb") "* ]] || rm -f "$deb"
    done
    for file in "${files[@]}"; do
        [ -s "$cache/debs/$file" ] || missing+=("$file")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    # (As root, apt would warn that its sandbox user cannot write here: it needs not.)
    (cd "$cache/debs" && apt-get download -qq -o APT::Sandbox::User=root "$@")
}

resolve_kernel() {
    # linux-image-amd64 Depends: linux-image-6.1.0-NN-amd64
    apt-cache depends "$kernel_meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1
}

kernel_pkg=$(resolve_kernel)
if [ -z "$kernel_pkg" ]; then
    apt-get update -qq
    kernel_pkg=$(resolve_kernel)
fi
[ -n "$kernel_pkg" ] || { echo "build-guest: cannot resolve $kernel_meta" >&2; exit 1; }

# The cache key: the exact package versions apt would fetch, and this script.
versions=$(apt-cache policy "$kernel_pkg" "${tool_packages[@]}" "${lib_packages[@]}" | awk '/^[^ ]/ {p=$1} /Candidate:/ {print p, $2}')
key=$( { echo "$versions"; cat "$0"; } | sha256sum | cut -d' ' -f1)
if [ -f "$cache/stamp" ] && [ "$(cat "$cache/stamp")" = "$key" ] \
    && [ -s "$cache/vmlinuz" ] && [ -s "$cache/base.cpio.gz" ]; then
    echo "build-guest: cached guest in $cache is current"
    exit 0
fi

start=$(date +%s.%N)
rm -rf "$cache/unpacked" "$cache/initramfs" "$cache/stamp"
mkdir -p "$cache/debs" "$cache/unpacked" "$cache/initramfs"
echo "build-guest: downloading $kernel_pkg ${tool_packages[*]} ${lib_packages[*]}"
apt_download "$kernel_pkg" "${tool_packages[@]}" "${lib_packages[@]}"
for deb in "$cache"/debs/*.deb; do
    case $(basename "$deb") in
        linux-image-*)
            # Of the kernel's ~430 MB unpacked, only the image and the drivers that can hold
            # the wanted modules and their dependencies (a module outside fails below, loudly).
            dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$cache/unpacked" --wildcards \
                './boot/vmlinuz-*' './lib/modules/*/modules.*' \
                './lib/modules/*/kernel/drivers/usb' './lib/modules/*/kernel/drivers/hid' \
                './lib/modules/*/kernel/drivers/net/ethernet/intel' ;;
        *) dpkg -x "$deb" "$cache/unpacked" ;;
    esac
done

src=$cache/unpacked
dst=$cache/initramfs
kver=${kernel_pkg#linux-image-}
cp "$src/boot/vmlinuz-$kver" "$cache/vmlinuz"

# --- binaries and the libraries they need (by their NEEDED entries, from the unpacked packages
# only, so the guest never depends on what the host happens to have installed) ---
libdirs=(lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu usr/libexec/sudo)
declare -A copied=()
copy_file() { # copy_file PATH-relative-to-src (symlinks followed)
    mkdir -p "$dst/$(dirname "$1")"
    cp -L "$src/$1" "$dst/$1"
}
find_lib() {
    local dir
    for dir in "${libdirs[@]}"; do
        if [ -e "$src/$dir/$1" ]; then echo "$dir/$1"; return 0; fi
    done
    return 1
}
add_elf() {
    local path=$1 lib libpath
    [ -n "${copied[$path]:-}" ] && return 0
    copied[$path]=1
    copy_file "$path"
    # Statically linked files (busybox) have no dynamic section.
    for lib in $(readelf -d "$src/$path" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        libpath=$(find_lib "$lib") || {
            echo "build-guest: $path needs $lib, which none of the packages ships; add its package to lib_packages" >&2
            exit 1
        }
        add_elf "$libpath"
    done
}
for binary in "${binaries[@]}"; do
    add_elf "$binary"
done
# The dynamic loader, at the path the binaries ask for.
mkdir -p "$dst/lib64"
cp -L "$src/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$dst/lib64/ld-linux-x86-64.so.2"
# usbip names vendors and products from usb.ids.
mkdir -p "$dst/usr/share/misc"
cp -L "$src/var/lib/usbutils/usb.ids" "$dst/usr/share/misc/usb.ids"

# --- busybox applets ---
mkdir -p "$dst/sbin" "$dst/usr/bin" "$dst/usr/sbin"
for applet in $("$dst/bin/busybox" --list); do
    [ -e "$dst/bin/$applet" ] || ln -s busybox "$dst/bin/$applet"
done

# --- kernel modules: the ones named above and everything they depend on ---
moddir=lib/modules/$kver
declare -A modpaths=()
while IFS= read -r -d '' ko; do
    name=$(basename "$ko"); name=${name%%.ko*}
    modpaths[${name//-/_}]=${ko#"$src/"}
done < <(find "$src/$moddir/kernel" -name '*.ko*' -print0)
declare -A wanted=()
add_module() {
    local name=${1//-/_} dep
    [ -n "${wanted[$name]:-}" ] && return 0
    local path=${modpaths[$name]:-}
    [ -n "$path" ] || { echo "build-guest: no module $1 in $kernel_pkg" >&2; exit 1; }
    wanted[$name]=1
    mkdir -p "$dst/$(dirname "$path")"
    cp "$src/$path" "$dst/$path"
    # The "depends=" string of the module's .modinfo section (the host may lack kmod).
    for dep in $(tr '\0' '\n' <"$src/$path" | sed -n 's/^depends=//p' | tr ',' ' '); do
        add_module "$dep"
    done
}
for module in "${modules[@]}"; do
    add_module "$module"
done
# modules.builtin lets modprobe treat built-in drivers (hidraw, ...) as present.
for meta in modules.order modules.builtin; do
    [ -f "$src/$moddir/$meta" ] && cp "$src/$moddir/$meta" "$dst/$moddir/"
done
"$dst/bin/busybox" depmod -b "$dst" "$kver"

# --- a minimal root: ssh-keygen wants a passwd entry for the user it runs as ---
mkdir -p "$dst/etc" "$dst/root" "$dst/tmp" "$dst/proc" "$dst/sys" "$dst/dev" "$dst/run"
echo 'root:x:0:0:root:/root:/bin/sh' > "$dst/etc/passwd"
echo 'root:x:0:' > "$dst/etc/group"
echo "$kver" > "$dst/etc/guest-kernel"

# --- a CI job's user: `runner` with password-less sudo, as on GitHub's hosted runners ---
echo 'runner:x:1001:1001:runner:/home/runner:/bin/bash' >> "$dst/etc/passwd"
echo 'runner:x:1001:' >> "$dst/etc/group"
mkdir -p "$dst/home/runner" "$dst/etc/pam.d"
chown 1001:1001 "$dst/home/runner"
chmod 4755 "$dst/usr/bin/sudo" # cp dropped the setuid bit the package gives it
printf '%s\n' 'Defaults env_reset, !lecture' \
    'Defaults secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"' \
    'root ALL=(ALL:ALL) ALL' 'runner ALL=(ALL:ALL) NOPASSWD: ALL' > "$dst/etc/sudoers"
chmod 0440 "$dst/etc/sudoers"
# PAM: nothing to check for a password-less rule; sudo still walks these stacks.
for type in auth account session password; do
    echo "$type required pam_permit.so"
done > "$dst/etc/pam.d/sudo"
printf '127.0.0.1 localhost guest\n' > "$dst/etc/hosts"
echo guest > "$dst/etc/hostname"

(cd "$dst" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$cache/base.cpio.gz"
echo "$key" > "$cache/stamp"
end=$(date +%s.%N)
printf 'build-guest: %s, %s modules, initramfs %s KiB, built in %.1f s\n' "$kernel_pkg" "${#wanted[@]}" \
    "$(( $(stat -c %s "$cache/base.cpio.gz") / 1024 ))" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')"
