#!/bin/bash
# Boots silo in a VM on real cgroup v2 and runs the limit checks there (tests/vm/guest-test.sh).
#
#   tests/vm/run.sh [BIN]      BIN: the silo binary (default: target/debug/silo)
#
# Installs what is missing (tests/vm/setup.sh) unless SILO_VM_NO_SETUP=1, builds the
# initramfs, boots the Debian cloud kernel under QEMU (TCG, 2 vCPUs), prints the serial
# console as it comes, and exits
#   0  the guest printed "SILO-VM-RESULT: PASS"
#   1  the guest printed "SILO-VM-RESULT: FAIL ..."
#   3  qemu, busybox, cpio or the kernel is missing and SILO_VM_NO_SETUP=1
#   4  no result: the VM timed out, crashed or never got to the checks
#   2  usage
# Environment: SILO_VM_TIMEOUT (host deadline in s, default 300), SILO_VM_MEM (MiB, default
# 512), SILO_VM_CPU (QEMU -cpu model, default max), SILO_VM_LOG (keep the console log there),
# SILO_VM_APPEND (more kernel arguments; KEY=VALUE ones reach /init's environment, e.g.
# SILO_VM_GUEST_TIMEOUT=120, the guest's own deadline), SILO_VM_GUEST_TEST (another guest script to run
# instead of tests/vm/guest-test.sh, for working on the harness).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$here/lib.sh"

[ "$#" -le 1 ] || { echo "usage: $0 [BIN]" >&2; exit 2; }
bin="${1:-$repo/target/debug/silo}"
[ -x "$bin" ] || { echo "run.sh: $bin is not an executable (cargo build -p silo)" >&2; exit 2; }
timeout_s="${SILO_VM_TIMEOUT:-300}"
mem="${SILO_VM_MEM:-512}"

say() { echo "silo-vm host: $*"; }

if ! "$here/setup.sh" --check >/dev/null; then
    if [ "${SILO_VM_NO_SETUP:-}" = 1 ]; then
        "$here/setup.sh" --check || true
        exit 3
    fi
    "$here/setup.sh"
fi
kernel="$(silo_vm_kernel)"
qemu="$(silo_vm_qemu)"

work="$(mktemp -d "${TMPDIR:-/tmp}/silo-vm.XXXXXX")"
qpid=""
tailpid=""
cleanup() {
    [ -n "$qpid" ] && kill -KILL "$qpid" 2>/dev/null
    [ -n "$tailpid" ] && kill "$tailpid" 2>/dev/null
    rm -rf "$work"
    return 0
}
trap cleanup EXIT
# Clean up (QEMU included) on these too; with SIGPIPE ignored, a closed stdout makes a
# write fail, and set -e exits through the EXIT trap.
trap 'exit 130' INT TERM HUP
trap '' PIPE
log="${SILO_VM_LOG:-$work/console.log}"
: >"$log"

t0=$(date +%s%N)
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

"$here/build-initramfs.sh" "$bin" "$work/initramfs.cpio"
say "initramfs $(du -h "$work/initramfs.cpio" | cut -f1) built in $(ms_since "$t0") ms;" \
    "kernel $(cat "$(silo_vm_cache_dir)/kernel-package")"

t_boot=$(date +%s%N)
# TCG only: KVM does not work on the machines this runs on. panic=-1 with -no-reboot makes
# a guest panic (e.g. /init dying) end QEMU at once.
# -nodefaults: no NIC (its option ROM costs boot time under TCG), no VGA; the serial port,
# the console, is the one device we add.
"$qemu" -accel tcg -cpu "${SILO_VM_CPU:-max}" -smp 2 -m "$mem" \
    -nodefaults -no-user-config -nographic -no-reboot -monitor none -serial "file:$log" \
    -kernel "$kernel" -initrd "$work/initramfs.cpio" \
    -append "console=ttyS0 panic=-1 quiet mitigations=off ${SILO_VM_APPEND:-}" \
    </dev/null &
qpid=$!
# The console as it comes (tail ends by itself once QEMU has exited).
tail -n +1 -s 0.2 -f --pid="$qpid" "$log" 2>/dev/null | sed -u 's/\r$//' &
tailpid=$!

boot_ms=""
timed_out=0
deadline=$(( $(date +%s) + timeout_s ))
while kill -0 "$qpid" 2>/dev/null; do
    if [ -z "$boot_ms" ] && grep -qa 'silo-vm: init at' "$log"; then
        boot_ms=$(ms_since "$t_boot")
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        timed_out=1
        kill -KILL "$qpid" 2>/dev/null || true
        break
    fi
    sleep 0.2
done
wait "$qpid" 2>/dev/null || true
qpid=""
total_ms=$(ms_since "$t_boot")
wait "$tailpid" 2>/dev/null || true
tailpid=""

result="$(tr -d '\r' <"$log" | grep -a '^SILO-VM-RESULT:' | tail -n 1 || true)"
echo
say "boot to /init: ${boot_ms:-never} ms; VM total: $total_ms ms (timeout ${timeout_s}s)"
if [ -n "${SILO_VM_LOG:-}" ]; then say "console log: $log"; fi
case "$result" in
    "SILO-VM-RESULT: PASS")
        say "PASS"
        exit 0 ;;
    "SILO-VM-RESULT: FAIL"*)
        say "FAIL: ${result#SILO-VM-RESULT: FAIL }"
        exit 1 ;;
esac
if [ "$timed_out" = 1 ]; then
    say "FAIL: no result within ${timeout_s}s (VM killed)"
else
    say "FAIL: the VM stopped without a result line (kernel panic or /init died?)"
fi
exit 4
