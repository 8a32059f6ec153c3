//! The job's default system-call filter.
//!
//! Everything is allowed except what is listed here. Nothing is ever killed: a refused call
//! is an error the program can report. The filter is three seccomp programs, compiled once
//! in the init and installed together, one per answer a refused call gets:
//! - the *refusals* (EPERM, as if the job lacked the privilege — it does; the filter is a
//!   second wall that does not depend on the kernel's capability checks being right),
//!   compiled by seccompiler: the `REFUSED` list (mounts, swap, reboot, kexec, modules,
//!   bpf, perf, userfaultfd, io_uring, keyrings, setns, file handles, clock setters, acct,
//!   quotas, syslog, I/O ports, migrate_pages and move_pages), and calls refused for some
//!   arguments only: unshare and clone with CLONE_NEWUSER, ptrace and process_vm_* of
//!   PID 1, and personality with any persona but the few Docker allows;
//! - the *absent calls* (ENOSYS, as if the kernel did not have them), written by hand
//!   because seccompiler has one match action per program and matches syscall numbers
//!   only exactly: any other architecture's calls (32-bit `int 0x80`) and the x32 ABI, whose
//!   numbers the other programs would not recognise, clone3, and the kernel AIO calls
//!   (io_setup and the rest);
//! - the *address families* (EAFNOSUPPORT, as if the kernel had no such family), written by
//!   hand for the same reason: socket and socketpair for any family but AF_UNIX, AF_INET,
//!   AF_INET6 and AF_NETLINK.
//!
//! The kernel runs every installed program and keeps the most severe answer (for answers of
//! equal severity, that of the program installed last), so the programs cannot undo each
//! other; no call is refused by two of them with different errnos.

use std::collections::BTreeMap;

use nix::errno::Errno;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use crate::protocol::InitError;

#[cfg(target_arch = "x86_64")]
const TARGET: TargetArch = TargetArch::x86_64;
/// `AUDIT_ARCH_X86_64`, the `arch` a native call carries in `struct seccomp_data`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const TARGET: TargetArch = TargetArch::aarch64;
/// `AUDIT_ARCH_AARCH64`, the `arch` a native call carries in `struct seccomp_data`.
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("silo's seccomp filter is written for x86_64 and aarch64 only");
// seccompiler, and the argument offsets below, read the low half of a 64-bit argument at
// its first byte.
#[cfg(target_endian = "big")]
compile_error!("silo's seccomp filter is written for little-endian machines only");

/// Calls refused with EPERM whatever their arguments.
const REFUSED: &[libc::c_long] = &[
    // The job's view of the filesystem is fixed: no mount API, old or new.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    // The machine is not the job's: swap, reboot, kexec, modules, accounting, quotas, the
    // kernel log.
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_syslog,
    libc::SYS_lookup_dcookie,
    // Large kernel attack surface, rarely needed by jobs.
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    // io_uring reaches much of the kernel around this filter, and has been a steady source
    // of exploits; runtimes fall back to plain system calls when it is refused.
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // The kernel keyring is not namespaced.
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    // Joining another namespace.
    libc::SYS_setns,
    // File handles open files by inode number, around the job's root (the "shocker" escape).
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    // The clocks are the host's.
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    // Direct I/O port access.
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    // Moving pages between NUMA nodes acts on another process's memory as well as the
    // caller's (given a pid), and the kernel lets CAP_SYS_NICE move pages other processes
    // share. Docker allows them only with CAP_SYS_NICE, which a job never has. The memory
    // policy calls (mbind, set_mempolicy, get_mempolicy) stay allowed: they act on the
    // caller only, are bounded by the job's cpuset.mems, and are what `numactl` and ML
    // runtimes use to place their memory.
    libc::SYS_migrate_pages,
    libc::SYS_move_pages,
];

/// The personas personality(2) may set — Docker's list; any other is refused with EPERM.
/// READ_IMPLIES_EXEC makes every readable mapping executable, ADDR_NO_RANDOMIZE and
/// ADDR_COMPAT_LAYOUT undo address-space randomisation, MMAP_PAGE_ZERO maps page 0 — each
/// an old exploitation aid.
const PERSONAS: &[u32] = &[
    PER_LINUX,
    PER_LINUX32,
    UNAME26,
    PER_LINUX32 | UNAME26,
    // Not a persona: personality(0xffffffff) only reads the current one.
    PERSONA_QUERY,
];
// From <linux/personality.h>.
const PER_LINUX: u32 = 0x0000;
const PER_LINUX32: u32 = 0x0008;
const UNAME26: u32 = 0x0020000;
const PERSONA_QUERY: u32 = 0xffff_ffff;

/// Calls answered ENOSYS, as a kernel built without them would (besides other
/// architectures' and x32 calls, see [`absent_calls`]).
const ABSENT: &[libc::c_long] = &[
    // clone3 takes its flags in a struct in memory, which seccomp cannot read, so
    // CLONE_NEWUSER cannot be told apart there. ENOSYS (not EPERM) makes glibc and others
    // fall back to clone, whose flags the refusals do see — what Docker's default profile
    // does.
    libc::SYS_clone3,
    // Kernel AIO contexts come from one host-wide pool (fs.aio-max-nr), which one job could
    // exhaust for every other job and the host. ENOSYS is what a kernel built without
    // CONFIG_AIO answers, so it is the answer code that can do without kernel AIO checks
    // for (MariaDB falls back to simulated AIO, libaio users report "AIO not in this
    // kernel"); EPERM reads as a transient permission problem. glibc's POSIX aio_* are
    // threads over plain reads and writes, and do not use these calls.
    libc::SYS_io_setup,
    libc::SYS_io_destroy,
    libc::SYS_io_submit,
    libc::SYS_io_cancel,
    libc::SYS_io_getevents,
    SYS_IO_PGETEVENTS,
];
/// io_pgetevents, which the libc crate does not name (arch/x86/entry/syscalls/syscall_64.tbl,
/// include/uapi/asm-generic/unistd.h).
#[cfg(target_arch = "x86_64")]
const SYS_IO_PGETEVENTS: libc::c_long = 333;
#[cfg(target_arch = "aarch64")]
const SYS_IO_PGETEVENTS: libc::c_long = 292;

/// The address families socket(2) and socketpair(2) may use; any other is answered
/// EAFNOSUPPORT, which programs probing for a family (IPv6, Bluetooth, vsock) already
/// handle as "not here".
///
/// AF_VSOCK reaches across network namespaces to the hypervisor and other VMs' services
/// (Docker's default profile refuses it for that reason); AF_PACKET, AF_ALG, AF_KEY and the
/// long tail of rarely used families are kernel attack surface a job does not need, with
/// `--network none` least of all. AF_NETLINK stays: `ip`, glibc's getaddrinfo and
/// if_nameindex use it, and it only reaches the job's own network namespace.
const FAMILIES: &[libc::c_int] = &[
    libc::AF_UNIX,
    libc::AF_INET,
    libc::AF_INET6,
    libc::AF_NETLINK,
];

/// The high bit x32 ABI calls set in their syscall number on x86_64.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// `struct seccomp_data` offsets: `int nr`, `__u32 arch`, `__u64 instruction_pointer`, then
// `__u64 args[6]`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// The low 32 bits of the first argument (little-endian). An `int` argument such as
/// socket's family is all there; the kernel ignores the high half.
const DATA_ARG0_LOW: u32 = 16;

/// The job's default system-call filter, compiled and ready to install.
#[derive(Debug, Clone)]
pub struct SyscallFilter {
    refusals: BpfProgram,
    absent_calls: BpfProgram,
    address_families: BpfProgram,
}

impl SyscallFilter {
    /// Compiles the filter for the architecture this program runs on.
    pub fn compile() -> Result<SyscallFilter, InitError> {
        Ok(SyscallFilter {
            refusals: compile_refusals()?,
            absent_calls: absent_calls(),
            address_families: address_families(),
        })
    }

    /// The programs in the order [`install`](Self::install) installs them.
    fn programs(&self) -> [&BpfProgram; 3] {
        [&self.refusals, &self.absent_calls, &self.address_families]
    }

    /// Installs the filter in the calling thread, for it and every process it execs or
    /// forks from now on; it cannot be removed. Sets no_new_privs first (which a filter
    /// needs without CAP_SYS_ADMIN). Allocates nothing unless it fails.
    pub fn install(&self) -> Result<(), InitError> {
        for program in self.programs() {
            seccompiler::apply_filter(program).map_err(|e| {
                let errno = match &e {
                    seccompiler::Error::Prctl(io) | seccompiler::Error::Seccomp(io) => {
                        super::errno_of(io)
                    }
                    _ => Errno::EINVAL,
                };
                InitError::setup(
                    "seccomp",
                    errno,
                    format!("cannot install the seccomp filter: {e}"),
                )
            })?;
        }
        Ok(())
    }
}

/// The EPERM program, compiled by seccompiler.
fn compile_refusals() -> Result<BpfProgram, InitError> {
    let compile_error = |e: &dyn std::fmt::Display| {
        InitError::setup(
            "seccomp",
            Errno::EINVAL,
            format!("cannot compile the seccomp filter: {e}"),
        )
    };
    // A condition on the low 32 bits of argument `arg`.
    let condition = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
            .map_err(|e| compile_error(&e))
    };
    // A rule that holds when every condition does.
    let all = |conditions: Vec<SeccompCondition>| {
        SeccompRule::new(conditions).map_err(|e| compile_error(&e))
    };
    let when = |arg: u8, op: SeccompCmpOp, value: u64| all(vec![condition(arg, op, value)?]);
    let new_user = libc::CLONE_NEWUSER as u64;

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        REFUSED.iter().map(|&nr| (nr, Vec::new())).collect();
    // A user namespace would hand the job a fresh set of capabilities over it. The other
    // namespace flags need CAP_SYS_ADMIN, which the job does not have, and CLONE_FILES and
    // the like stay allowed.
    for nr in [libc::SYS_unshare, libc::SYS_clone] {
        rules.insert(
            nr,
            vec![when(0, SeccompCmpOp::MaskedEq(new_user), new_user)?],
        );
    }
    // Inside the job's pid namespace the only process that is not the job's own is PID 1,
    // the init (pids are resolved in the caller's namespace). Tracing it or reading its
    // memory is refused here; debuggers still work on the job's own processes. (The kernel
    // would refuse too: the init holds capabilities the job lacks.)
    rules.insert(libc::SYS_ptrace, vec![when(1, SeccompCmpOp::Eq, 1)?]);
    for nr in [libc::SYS_process_vm_readv, libc::SYS_process_vm_writev] {
        rules.insert(nr, vec![when(0, SeccompCmpOp::Eq, 1)?]);
    }
    // personality's argument is an `unsigned int`: refused when its low 32 bits are none of
    // the allowed personas.
    let other_persona = PERSONAS
        .iter()
        .map(|&p| condition(0, SeccompCmpOp::Ne, u64::from(p)))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_personality, vec![all(other_persona)?]);

    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TARGET,
    )
    .map_err(|e| compile_error(&e))?;
    let mut program: BpfProgram = filter.try_into().map_err(|e| compile_error(&e))?;

    // seccompiler kills the process on a call from another architecture. The absent-calls
    // program refuses those with ENOSYS instead, and the kernel would let a kill here win
    // over it, so the kill becomes the same ENOSYS.
    let mut kills = 0;
    for insn in program.iter_mut() {
        if insn.code == RET && insn.k == libc::SECCOMP_RET_KILL_PROCESS {
            insn.k = refuse(Errno::ENOSYS);
            kills += 1;
        }
    }
    if kills != 1 {
        return Err(compile_error(&format_args!(
            "expected seccompiler's one architecture check, found {kills}"
        )));
    }
    Ok(program)
}

/// The ENOSYS program: another architecture's calls, x32 calls and the [`ABSENT`] calls are
/// answered ENOSYS, everything else is allowed.
fn absent_calls() -> BpfProgram {
    let enosys = refuse(Errno::ENOSYS);
    let mut program = vec![
        stmt(LOAD_WORD, DATA_ARCH),
        jump_if_eq(AUDIT_ARCH, 1, 0),
        stmt(RET, enosys),
        stmt(LOAD_WORD, DATA_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    program.extend([
        sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        stmt(RET, enosys),
    ]);
    // One test per absent call, each jumping to the ENOSYS after the final allow.
    program.extend(ABSENT.iter().enumerate().map(|(i, &nr)| {
        let to_enosys = ABSENT.len() - i;
        jump_if_eq(nr as u32, short_jump(to_enosys), 0)
    }));
    program.extend([stmt(RET, libc::SECCOMP_RET_ALLOW), stmt(RET, enosys)]);
    program
}

/// The EAFNOSUPPORT program: socket and socketpair with a family outside [`FAMILIES`] are
/// answered EAFNOSUPPORT, everything else is allowed. Another architecture's calls are
/// allowed here: [`absent_calls`] refuses them.
fn address_families() -> BpfProgram {
    // Laid out as: arch and number checks, the family tests, EAFNOSUPPORT, allow.
    const FAMILY_TESTS_AT: usize = 6;
    let eafnosupport_at = FAMILY_TESTS_AT + FAMILIES.len();
    let allow_at = eafnosupport_at + 1;
    // The jump offset from the instruction at `from` to the one at `to`.
    let skip = |from: usize, to: usize| short_jump(to - from - 1);

    let mut program = vec![
        stmt(LOAD_WORD, DATA_ARCH),
        jump_if_eq(AUDIT_ARCH, 0, skip(1, allow_at)),
        stmt(LOAD_WORD, DATA_NR),
        jump_if_eq(libc::SYS_socket as u32, skip(3, 5), 0),
        jump_if_eq(libc::SYS_socketpair as u32, 0, skip(4, allow_at)),
        stmt(LOAD_WORD, DATA_ARG0_LOW),
    ];
    debug_assert_eq!(program.len(), FAMILY_TESTS_AT);
    program.extend(
        FAMILIES
            .iter()
            .enumerate()
            .map(|(i, &family)| jump_if_eq(family as u32, skip(FAMILY_TESTS_AT + i, allow_at), 0)),
    );
    program.extend([
        stmt(RET, refuse(Errno::EAFNOSUPPORT)),
        stmt(RET, libc::SECCOMP_RET_ALLOW),
    ]);
    program
}

const LOAD_WORD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// The return value that fails a call with `errno`.
fn refuse(errno: Errno) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// A conditional jump's offset, which classic BPF holds in a byte.
fn short_jump(instructions: usize) -> u8 {
    instructions as u8
}
// The longest jumps above skip one list and a few instructions.
const _: () = assert!(ABSENT.len() < 250 && FAMILIES.len() < 250);

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if_eq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

#[cfg(test)]
mod tests {
    //! The compiled programs run here through a small classic-BPF interpreter, so the
    //! filter's answers are checked without root or a kernel.

    use super::*;

    /// The subset of `struct seccomp_data` the filter reads.
    struct Call {
        nr: libc::c_long,
        arch: u32,
        args: [u64; 6],
    }

    fn call(nr: libc::c_long, args: &[u64]) -> Call {
        let mut all = [0u64; 6];
        all[..args.len()].copy_from_slice(args);
        Call {
            nr,
            arch: AUDIT_ARCH,
            args: all,
        }
    }

    /// Reads the 32-bit word at `offset` of the call's `seccomp_data`.
    fn word(c: &Call, offset: u32) -> u32 {
        match offset {
            0 => c.nr as u32,
            4 => c.arch,
            o if o >= 16 => {
                let arg = c.args[((o - 16) / 8) as usize];
                if (o - 16) % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            o => panic!("unexpected load at offset {o}"),
        }
    }

    fn run(program: &[sock_filter], c: &Call) -> u32 {
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &program[pc];
            pc += 1;
            let class = u32::from(i.code) & 0x07;
            let op = u32::from(i.code) & 0xf0;
            match class {
                c_ if c_ == libc::BPF_LD => acc = word(c, i.k),
                c_ if c_ == libc::BPF_ALU && op == 0x50 => acc &= i.k,
                c_ if c_ == libc::BPF_RET => return i.k,
                c_ if c_ == libc::BPF_JMP => {
                    let taken = match op {
                        0x00 => {
                            pc += i.k as usize;
                            continue;
                        }
                        0x10 => acc == i.k,
                        0x20 => acc > i.k,
                        0x30 => acc >= i.k,
                        0x40 => acc & i.k != 0,
                        _ => panic!("unexpected jump {:#x}", i.code),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                _ => panic!("unexpected instruction {:#x}", i.code),
            }
        }
    }

    /// What the kernel answers with every program installed: the most severe action
    /// (compared as signed action values), and of equally severe ones that of the program
    /// installed last — seccomp_run_filters walks from the newest filter and keeps the
    /// first strictly more severe answer.
    fn verdict(c: &Call) -> u32 {
        let f = SyscallFilter::compile().unwrap();
        let action = |r: u32| (r & libc::SECCOMP_RET_ACTION_FULL) as i32;
        let mut answer = libc::SECCOMP_RET_ALLOW;
        for program in f.programs().iter().rev() {
            let r = run(program, c);
            if action(r) < action(answer) {
                answer = r;
            }
        }
        answer
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    fn eperm() -> u32 {
        refuse(Errno::EPERM)
    }
    fn enosys() -> u32 {
        refuse(Errno::ENOSYS)
    }
    fn eafnosupport() -> u32 {
        refuse(Errno::EAFNOSUPPORT)
    }

    #[test]
    fn every_listed_call_is_refused_with_eperm() {
        for &nr in REFUSED {
            assert_eq!(verdict(&call(nr, &[])), eperm(), "syscall {nr}");
        }
    }

    #[test]
    fn ordinary_calls_are_allowed() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_exit_group,
            libc::SYS_wait4,
            libc::SYS_sethostname,
            libc::SYS_mbind,
            libc::SYS_set_mempolicy,
            libc::SYS_get_mempolicy,
        ] {
            assert_eq!(verdict(&call(nr, &[])), ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn new_user_namespaces_are_refused_but_other_unshares_and_clones_are_not() {
        let new_user = libc::CLONE_NEWUSER as u64;
        for nr in [libc::SYS_unshare, libc::SYS_clone] {
            assert_eq!(verdict(&call(nr, &[new_user])), eperm());
            assert_eq!(
                verdict(&call(nr, &[new_user | libc::CLONE_NEWNS as u64])),
                eperm()
            );
            assert_eq!(verdict(&call(nr, &[libc::CLONE_FILES as u64])), ALLOW);
        }
        // What glibc's fork() passes.
        let fork_flags =
            (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64 | libc::SIGCHLD as u64;
        assert_eq!(verdict(&call(libc::SYS_clone, &[fork_flags])), ALLOW);
    }

    #[test]
    fn clone3_is_answered_enosys_so_libc_falls_back_to_clone() {
        assert_eq!(verdict(&call(libc::SYS_clone3, &[])), enosys());
    }

    #[test]
    fn tracing_the_init_is_refused_but_the_jobs_own_processes_can_be_traced() {
        let attach = libc::PTRACE_ATTACH as u64;
        assert_eq!(verdict(&call(libc::SYS_ptrace, &[attach, 1])), eperm());
        assert_eq!(verdict(&call(libc::SYS_ptrace, &[attach, 42])), ALLOW);
        assert_eq!(verdict(&call(libc::SYS_process_vm_readv, &[1])), eperm());
        assert_eq!(verdict(&call(libc::SYS_process_vm_writev, &[1])), eperm());
        assert_eq!(verdict(&call(libc::SYS_process_vm_readv, &[42])), ALLOW);
    }

    #[test]
    fn another_architectures_calls_get_enosys_and_never_a_kill() {
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        let mut c = call(libc::SYS_read, &[]);
        c.arch = AUDIT_ARCH_I386;
        assert_eq!(verdict(&c), enosys());
        let f = SyscallFilter::compile().unwrap();
        for insn in f.programs().into_iter().flatten() {
            assert!(
                !(insn.code == RET && insn.k == libc::SECCOMP_RET_KILL_PROCESS),
                "the filter must never kill"
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_get_enosys() {
        let c = call(libc::SYS_mount | X32_SYSCALL_BIT as libc::c_long, &[]);
        assert_eq!(verdict(&c), enosys());
    }

    #[test]
    fn sockets_of_other_families_get_eafnosupport() {
        for nr in [libc::SYS_socket, libc::SYS_socketpair] {
            for family in [
                libc::AF_UNSPEC,
                libc::AF_VSOCK,
                libc::AF_PACKET,
                libc::AF_KEY,
                libc::AF_ALG,
                libc::AF_BLUETOOTH,
                libc::AF_CAN,
                libc::AF_XDP,
                0xffff,
            ] {
                let c = call(nr, &[family as u64, libc::SOCK_STREAM as u64]);
                assert_eq!(verdict(&c), eafnosupport(), "syscall {nr}, family {family}");
            }
        }
    }

    #[test]
    fn unix_inet_inet6_and_netlink_sockets_are_allowed() {
        for nr in [libc::SYS_socket, libc::SYS_socketpair] {
            for family in [
                libc::AF_UNIX,
                libc::AF_INET,
                libc::AF_INET6,
                libc::AF_NETLINK,
            ] {
                let c = call(nr, &[family as u64, libc::SOCK_STREAM as u64]);
                assert_eq!(verdict(&c), ALLOW, "syscall {nr}, family {family}");
            }
        }
    }

    #[test]
    fn a_sockets_family_is_judged_by_the_low_32_bits_the_kernel_reads() {
        let high = 1u64 << 32;
        let vsock = call(libc::SYS_socket, &[high | libc::AF_VSOCK as u64]);
        assert_eq!(verdict(&vsock), eafnosupport());
        let inet = call(libc::SYS_socket, &[high | libc::AF_INET as u64]);
        assert_eq!(verdict(&inet), ALLOW);
    }

    #[test]
    fn the_family_check_leaves_other_calls_with_the_same_first_argument_alone() {
        let c = call(libc::SYS_read, &[libc::AF_VSOCK as u64]);
        assert_eq!(verdict(&c), ALLOW);
    }

    #[test]
    fn kernel_aio_is_answered_enosys() {
        for nr in [
            libc::SYS_io_setup,
            libc::SYS_io_destroy,
            libc::SYS_io_submit,
            libc::SYS_io_cancel,
            libc::SYS_io_getevents,
            SYS_IO_PGETEVENTS,
        ] {
            assert_eq!(verdict(&call(nr, &[])), enosys(), "syscall {nr}");
        }
    }

    #[test]
    fn only_dockers_personas_can_be_set() {
        for persona in [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
            let c = call(libc::SYS_personality, &[persona]);
            assert_eq!(verdict(&c), ALLOW, "persona {persona:#x}");
        }
        for persona in [
            libc::READ_IMPLIES_EXEC as u64,
            libc::ADDR_NO_RANDOMIZE as u64,
            0x0010_0000, // MMAP_PAGE_ZERO
            0x0020_0000, // ADDR_COMPAT_LAYOUT
            0x8 | libc::READ_IMPLIES_EXEC as u64,
            0x1,
        ] {
            let c = call(libc::SYS_personality, &[persona]);
            assert_eq!(verdict(&c), eperm(), "persona {persona:#x}");
        }
    }

    #[test]
    fn moving_pages_is_refused_but_memory_policies_are_not() {
        for nr in [libc::SYS_migrate_pages, libc::SYS_move_pages] {
            assert_eq!(verdict(&call(nr, &[0])), eperm(), "syscall {nr}");
        }
        for nr in [
            libc::SYS_mbind,
            libc::SYS_set_mempolicy,
            libc::SYS_get_mempolicy,
        ] {
            assert_eq!(verdict(&call(nr, &[0])), ALLOW, "syscall {nr}");
        }
    }
}
