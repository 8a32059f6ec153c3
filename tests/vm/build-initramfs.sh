#!/bin/bash
# Builds the VM test's initramfs (a newc cpio) from the silo binary BIN:
#
#   tests/vm/build-initramfs.sh BIN OUT
#
# It holds busybox-static (with a symlink per applet), BIN as /bin/silo (debug info
# stripped: a debug build is ~170 MB, ~25 MB without it), the shared libraries BIN needs
# (from ldd) and the dynamic loader, the kernel's loop.ko, a minimal /etc, tests/vm/init as
# /init and
# tests/vm/guest-test.sh as /guest-test.sh. Root is not needed: the one device node the
# kernel wants before /init runs (/dev/console) is written into the archive directly.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 BIN OUT" >&2
    exit 2
fi
bin="$1"
out="$2"
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"

[ -x "$bin" ] || { echo "build-initramfs: $bin is not an executable" >&2; exit 1; }
busybox="$(silo_vm_busybox)" || { echo "build-initramfs: no static busybox (run tests/vm/setup.sh)" >&2; exit 1; }
command -v cpio >/dev/null || { echo "build-initramfs: no cpio (run tests/vm/setup.sh)" >&2; exit 1; }

stage="$(mktemp -d "${TMPDIR:-/tmp}/silo-vm-initramfs.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# Not merged-/usr: /bin, /sbin, /lib and /lib64 are real directories. The job sandbox shows
# them (and /usr) to every job read-only, so jobs find busybox's applets on their PATH.
for d in bin sbin lib lib64 usr/bin usr/sbin etc proc sys dev tmp run root var/lib newroot; do
    mkdir -p "$stage/$d"
done
chmod 1777 "$stage/tmp"

# busybox and its applets (absolute symlinks: they resolve inside a job's root too).
cp "$busybox" "$stage/bin/busybox"
"$busybox" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$stage/$(dirname "$applet")"
    ln -sf /bin/busybox "$stage/$applet"
done

# silo, without debug info when a strip tool is there.
if command -v strip >/dev/null; then
    strip --strip-debug -o "$stage/bin/silo" "$bin"
elif command -v objcopy >/dev/null; then
    objcopy --strip-debug "$bin" "$stage/bin/silo"
else
    cp "$bin" "$stage/bin/silo"
fi
chmod 755 "$stage/bin/silo"

# The shared libraries silo needs, at the paths ldd names (the loader included).
ldd "$bin" | awk '
    $2 == "=>" && $3 ~ /^\// { print $3 }
    $1 ~ /^\// { print $1 }
' | sort -u | while read -r lib; do
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
done
# The loader at the path the binary asks for (PT_INTERP), whatever ldd printed.
interp="$(readelf -l "$bin" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')" || true
if [ -n "$interp" ] && [ ! -e "$stage$interp" ]; then
    mkdir -p "$stage$(dirname "$interp")"
    cp -L "$interp" "$stage$interp"
fi

# loop.ko from the kernel package, when setup.sh saved it: the guest's state directory goes
# on a loop device so that --io-bps has a block device to limit.
if [ -s "$(silo_vm_cache_dir)/loop.ko" ]; then
    mkdir -p "$stage/lib/modules"
    cp "$(silo_vm_cache_dir)/loop.ko" "$stage/lib/modules/loop.ko"
fi

# A minimal /etc.
cat >"$stage/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$stage/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
printf '127.0.0.1 localhost\n::1 localhost\n' >"$stage/etc/hosts"
echo silo-vm >"$stage/etc/hostname"

install -m 755 "$here/init" "$stage/init"
install -m 755 "${SILO_VM_GUEST_TEST:-$here/guest-test.sh}" "$stage/guest-test.sh"

# One newc cpio entry with no data (a directory or device node) for the file `name`.
newc_entry() { # name mode(octal) rdevmajor rdevminor
    local name="$1" mode="$2" major="$3" minor="$4"
    local namesize=$(( ${#name} + 1 ))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        0 "$((8#$mode))" 0 0 1 0 0 0 0 "$major" "$minor" "$namesize" 0
    printf '%s\0' "$name"
    # header (110 bytes) + name padded to a multiple of 4
    local pad=$(( (4 - (110 + namesize) % 4) % 4 ))
    head -c "$pad" /dev/zero
}

# Not compressed: under TCG the kernel takes ~1.5 s to gunzip 15 MB, more than copying
# the 45 MB of the plain archive costs.
mkdir -p "$(dirname "$out")"
{
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet)
    # A second archive, concatenated: /dev/console, which the kernel opens for /init's
    # stdin/stdout/stderr before /init runs (devtmpfs is not mounted yet then).
    newc_entry dev/console 020600 5 1
    newc_entry TRAILER!!! 0 0 0
} >"$out.tmp"
mv "$out.tmp" "$out"
