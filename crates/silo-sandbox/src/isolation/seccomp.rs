//! The job's default system-call filter.
//!
//! Everything is allowed except the calls below, which fail with EPERM as if the job lacked
//! the privilege (it does; the filter is a second wall that does not depend on the kernel's
//! capability checks being right). Nothing is ever killed: a refused call is an error the
//! program can report.
//!
//! The filter is two seccomp programs, compiled once in the init and installed together:
//! - the *refusals*, compiled by seccompiler: one EPERM list, some entries conditional on an
//!   argument (unshare and clone only with CLONE_NEWUSER; ptrace and process_vm_* only
//!   of PID 1);
//! - the *ABI guard*, written by hand because seccompiler has one match action per program
//!   and matches syscall numbers only exactly: it answers ENOSYS to clone3, to the x32 ABI
//!   and to any other architecture's calls (32-bit `int 0x80`), whose syscall numbers the
//!   refusals would not recognise.
//!
//! The kernel runs every installed program and keeps the most severe answer, so the two
//! cannot undo each other.

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

/// Calls refused whatever their arguments.
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
];

/// The high bit x32 ABI calls set in their syscall number on x86_64.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// `struct seccomp_data` offsets: `int nr` then `__u32 arch`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// The job's default system-call filter, compiled and ready to install.
#[derive(Debug, Clone)]
pub struct SyscallFilter {
    refusals: BpfProgram,
    abi_guard: BpfProgram,
}

impl SyscallFilter {
    /// Compiles the filter for the architecture this program runs on.
    pub fn compile() -> Result<SyscallFilter, InitError> {
        Ok(SyscallFilter {
            refusals: compile_refusals()?,
            abi_guard: abi_guard(),
        })
    }

    /// Installs the filter in the calling thread, for it and every process it execs or
    /// forks from now on; it cannot be removed. Sets no_new_privs first (which a filter
    /// needs without CAP_SYS_ADMIN). Allocates nothing unless it fails.
    pub fn install(&self) -> Result<(), InitError> {
        for program in [&self.refusals, &self.abi_guard] {
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

/// The EPERM list, compiled by seccompiler.
fn compile_refusals() -> Result<BpfProgram, InitError> {
    let compile_error = |e: &dyn std::fmt::Display| {
        InitError::setup(
            "seccomp",
            Errno::EINVAL,
            format!("cannot compile the seccomp filter: {e}"),
        )
    };
    let when = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| compile_error(&e))
    };
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

    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TARGET,
    )
    .map_err(|e| compile_error(&e))?;
    let mut program: BpfProgram = filter.try_into().map_err(|e| compile_error(&e))?;

    // seccompiler kills the process on a call from another architecture. The ABI guard
    // refuses those with ENOSYS instead, and the kernel would let a kill here win over it,
    // so the kill becomes the same ENOSYS.
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

/// The hand-written program: ENOSYS for another architecture's calls, for x32 calls and for
/// clone3, everything else allowed.
///
/// clone3 takes its flags in a struct in memory, which seccomp cannot read, so CLONE_NEWUSER
/// cannot be told apart there. ENOSYS (not EPERM) makes glibc and others fall back to clone,
/// whose flags the refusals do see — what Docker's default profile does.
fn abi_guard() -> BpfProgram {
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
    program.extend([
        jump_if_eq(libc::SYS_clone3 as u32, 0, 1),
        stmt(RET, enosys),
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

    /// What the kernel answers with both programs installed: the most severe action
    /// (compared as signed action values, like seccomp_run_filters).
    fn verdict(c: &Call) -> u32 {
        let f = SyscallFilter::compile().unwrap();
        let a = run(&f.refusals, c);
        let b = run(&f.abi_guard, c);
        let action = |r: u32| (r & libc::SECCOMP_RET_ACTION_FULL) as i32;
        if action(b) < action(a) { b } else { a }
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    fn eperm() -> u32 {
        refuse(Errno::EPERM)
    }
    fn enosys() -> u32 {
        refuse(Errno::ENOSYS)
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
            libc::SYS_socket,
            libc::SYS_sethostname,
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
        for insn in f.refusals.iter().chain(&f.abi_guard) {
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
}
