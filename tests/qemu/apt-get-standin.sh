#!/bin/sh
# apt-get in the kernel-path test's guest, for the GitHub Actions recipe's steps: the guest has
# no package archive, so this installs nothing. It checks that apt-get runs as root (the recipe
# must use sudo) and that each package asked for is one the guest image already brings
# (tests/qemu/build-guest.sh), so a recipe that comes to need more fails the test.
case ${1:-} in
    update) echo "apt-get (guest stand-in): update: nothing to fetch"; exit 0 ;;
    install) shift ;;
    *) echo "apt-get (guest stand-in): '${1:-}' is not supported" >&2; exit 100 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "E: Could not open lock file /var/lib/dpkg/lock-frontend - are you root?" >&2
    exit 100
fi
for package; do
    case $package in
        -y | -q | -qq | --no-install-recommends) ;;
        "linux-modules-extra-$(uname -r)")
            echo "apt-get (guest stand-in): $package: vhci-hcd and uhid are in the guest's kernel" ;;
        acl | fido2-tools)
            echo "apt-get (guest stand-in): $package: in the guest image" ;;
        *)
            echo "apt-get (guest stand-in): $package is not in the guest image" >&2
            exit 100 ;;
    esac
done
