# Shared by tests/vm/*.sh (sourced, not run): where the VM harness keeps what it fetches.
#
# The cache holds the extracted Debian cloud kernel. It is never inside the repository:
#   $SILO_VM_CACHE if set, else /var/cache/silo-vm when writable (root),
#   else ${XDG_CACHE_HOME:-$HOME/.cache}/silo-vm.

# The kernel package we boot. Pinned so every run boots the same kernel; setup.sh falls back
# to the newest linux-image-6.1.0-*-cloud-amd64 when the archive no longer has this one.
SILO_VM_KERNEL_PKG_PINNED="linux-image-6.1.0-50-cloud-amd64"

silo_vm_cache_dir() {
    if [ -n "${SILO_VM_CACHE:-}" ]; then
        printf '%s\n' "$SILO_VM_CACHE"
    elif [ "$(id -u)" = 0 ] || [ -w /var/cache/silo-vm ]; then
        printf '%s\n' /var/cache/silo-vm
    else
        printf '%s\n' "${XDG_CACHE_HOME:-$HOME/.cache}/silo-vm"
    fi
}

# The kernel image setup.sh extracted (a stable name; kernel-package says which package).
silo_vm_kernel() {
    printf '%s/vmlinuz\n' "$(silo_vm_cache_dir)"
}

# A statically linked busybox, or nothing.
silo_vm_busybox() {
    for b in "${SILO_VM_BUSYBOX:-}" /bin/busybox /usr/bin/busybox; do
        [ -n "$b" ] && [ -x "$b" ] || continue
        # A static busybox has no interpreter: ldd says "not a dynamic executable".
        if ! ldd "$b" >/dev/null 2>&1; then
            printf '%s\n' "$b"
            return 0
        fi
    done
    return 1
}

silo_vm_qemu() {
    command -v qemu-system-x86_64
}
