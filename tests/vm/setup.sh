#!/bin/bash
# Installs what the cgroup v2 VM test needs, idempotently: qemu-system-x86, busybox-static,
# cpio (apt-get install, only what is missing), and a Debian cloud kernel (apt-get download;
# its vmlinuz, config and loop.ko extracted into a cache outside the repository; lib.sh).
#
#   tests/vm/setup.sh           install what is missing (root; runs apt-get)
#   tests/vm/setup.sh --check   install nothing; exit 0 when everything is there, else 1
#                               and say what is missing
#
# .ci/run must run this (as root) before `cargo test`: the test itself never installs.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"

check_only=0
case "${1:-}" in
    --check) check_only=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

cache="$(silo_vm_cache_dir)"
kernel="$(silo_vm_kernel)"

missing=()
silo_vm_qemu >/dev/null || missing+=(qemu-system-x86)
silo_vm_busybox >/dev/null || missing+=(busybox-static)
command -v cpio >/dev/null || missing+=(cpio)
have_kernel=0
[ -s "$kernel" ] && [ -s "$cache/loop.ko" ] && [ -s "$cache/kernel-package" ] && have_kernel=1

if [ "$check_only" = 1 ]; then
    status=0
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "missing packages: ${missing[*]}"
        status=1
    fi
    if [ "$have_kernel" = 0 ]; then
        echo "missing kernel: $kernel (run tests/vm/setup.sh as root)"
        status=1
    fi
    [ "$status" = 0 ] && echo "ok: kernel $(cat "$cache/kernel-package") at $kernel"
    exit "$status"
fi

if [ "${#missing[@]}" -eq 0 ] && [ "$have_kernel" = 1 ]; then
    echo "silo-vm setup: everything present (kernel $(cat "$cache/kernel-package"))"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    what="${missing[*]:-}"
    [ "$have_kernel" = 0 ] && what="$what kernel"
    echo "silo-vm setup: need root to install:$what" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq

# The version of an installed package, or nothing.
installed_version() {
    dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null | awk '$3 == "installed" {print $4}'
}

tmp_apt=""
cleanup() {
    [ -n "$tmp_apt" ] && rm -rf "$tmp_apt"
    [ -n "${work:-}" ] && rm -rf "$work"
    return 0
}
trap cleanup EXIT

if [ "${#missing[@]}" -gt 0 ]; then
    echo "silo-vm setup: installing ${missing[*]}"
    # --no-remove everywhere: setup must never take away what the machine came with.
    apt_opts=(-y -qq --no-install-recommends --no-remove)
    # Some machine images carry qemu-utils from backports; qemu-system-x86 from the release
    # would make apt remove it (the versions must match). Take qemu-system-x86 from the same
    # backports suite then, through a private list directory (the system's apt sources and
    # lists stay as they are).
    qemu_utils="$(installed_version qemu-utils)"
    if [[ " ${missing[*]} " == *" qemu-system-x86 "* && "$qemu_utils" == *"~bpo"* ]]; then
        codename="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
        tmp_apt="$(mktemp -d)"
        mkdir -p "$tmp_apt/lists/partial"
        # Let apt's unprivileged downloader write there (else it warns and runs as root).
        chmod 755 "$tmp_apt" "$tmp_apt/lists"
        chown _apt "$tmp_apt/lists/partial" 2>/dev/null || true
        echo "deb http://deb.debian.org/debian ${codename}-backports main" >"$tmp_apt/sources.list"
        bpo=(-o "Dir::Etc::sourcelist=$tmp_apt/sources.list" -o "Dir::State::lists=$tmp_apt/lists")
        echo "silo-vm setup: qemu-utils $qemu_utils is from backports; qemu-system-x86 comes from ${codename}-backports too"
        apt-get "${bpo[@]}" update -qq
        apt-get "${bpo[@]}" install "${apt_opts[@]}" -t "${codename}-backports" \
            "qemu-system-x86=$qemu_utils"
        rest=()
        for p in "${missing[@]}"; do [ "$p" = qemu-system-x86 ] || rest+=("$p"); done
        missing=("${rest[@]}")
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get install "${apt_opts[@]}" "${missing[@]}"
    fi
fi

if [ "$have_kernel" = 0 ]; then
    pkg="$SILO_VM_KERNEL_PKG_PINNED"
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
        # The pinned ABI left the archive: take the newest 6.1.0 cloud kernel there is.
        newest="$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' \
            | awk '{print $1}' | sort -V | tail -n 1)"
        if [ -z "$newest" ]; then
            echo "silo-vm setup: no linux-image-6.1.0-*-cloud-amd64 in the apt sources" >&2
            exit 1
        fi
        echo "silo-vm setup: pinned $pkg is gone; using $newest" >&2
        pkg="$newest"
    fi
    mkdir -p "$cache"
    rm -f "$cache/kernel-package"
    work="$(mktemp -d "$cache/download.XXXXXX")"
    echo "silo-vm setup: downloading $pkg"
    # apt-get download writes into the current directory; as root it warns that the
    # download is unsandboxed (the _apt user cannot write here), which is harmless.
    (cd "$work" && apt-get download -qq "$pkg" 2>&1 | grep -v 'unsandboxed' || true)
    deb="$(ls "$work"/*.deb 2>/dev/null | head -n 1)"
    if [ -z "$deb" ]; then
        echo "silo-vm setup: apt-get download $pkg produced no .deb" >&2
        exit 1
    fi
    dpkg-deb -x "$deb" "$work/x"
    vmlinuz="$(ls "$work"/x/boot/vmlinuz-* | head -n 1)"
    config="$(ls "$work"/x/boot/config-* | head -n 1)"
    # Every controller the server enables must be built in (an initramfs has no modules).
    for opt in CONFIG_CGROUPS CONFIG_MEMCG CONFIG_CGROUP_PIDS CONFIG_CPUSETS \
        CONFIG_CGROUP_SCHED CONFIG_CFS_BANDWIDTH CONFIG_BLK_CGROUP CONFIG_BLK_DEV_THROTTLING \
        CONFIG_DEVTMPFS CONFIG_TMPFS CONFIG_BLK_DEV_INITRD CONFIG_SERIAL_8250_CONSOLE; do
        if ! grep -qx "$opt=y" "$config"; then
            echo "silo-vm setup: $pkg lacks $opt=y" >&2
            exit 1
        fi
    done
    # loop.ko (a module in this kernel, with no dependencies): the guest puts the state
    # directory on a loop device so that --io-bps has a block device to limit.
    loop_ko="$(ls "$work"/x/lib/modules/*/kernel/drivers/block/loop.ko | head -n 1)"
    cp "$vmlinuz" "$kernel.new"
    cp "$config" "$cache/config.new"
    cp "$loop_ko" "$cache/loop.ko.new"
    mv "$kernel.new" "$kernel"
    mv "$cache/config.new" "$cache/config"
    mv "$cache/loop.ko.new" "$cache/loop.ko"
    # Written last: its presence means the kernel beside it is complete.
    printf '%s\n' "$pkg" >"$cache/kernel-package"
    echo "silo-vm setup: kernel $pkg at $kernel"
fi
