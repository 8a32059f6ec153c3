//! Taking every capability away from the command, for good.
//!
//! A process's capabilities live in five sets (capabilities(7)): the bounding set limits what
//! any later execve can grant, the ambient and inheritable sets carry capabilities across
//! execve, and permitted/effective are what it holds now. All five end empty, and the
//! securebits make sure uid 0 does not get them back on execve.

use nix::errno::Errno;

use super::fail;
use crate::protocol::InitError;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets, as two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The securebits the command keeps, each with its lock so nothing can clear it again:
/// - `NOROOT`: uid 0 gains no capabilities on execve (a `--user 0` job stays powerless);
/// - `NO_SETUID_FIXUP`: changing uids does not move capabilities around (there are none);
/// - `KEEP_CAPS` off and locked: a later setuid cannot ask to keep capabilities;
/// - `NO_CAP_AMBIENT_RAISE`: nothing can enter the ambient set.
const SECUREBITS: libc::c_int = libc::SECBIT_NOROOT
    | libc::SECBIT_NOROOT_LOCKED
    | libc::SECBIT_NO_SETUID_FIXUP
    | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
    | libc::SECBIT_KEEP_CAPS_LOCKED
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empties the bounding set. Needs CAP_SETPCAP, so it runs before the uid changes.
///
/// The loop runs until the kernel answers EINVAL, which is how PR_CAPBSET_DROP says that a
/// capability is past the kernel's last one (the number /proc/sys/kernel/cap_last_cap shows):
/// asking the kernel itself covers capabilities newer than this program and needs no /proc.
pub(super) fn drop_bounding_set() -> Result<(), InitError> {
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes an integer and touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } == 0 {
            continue;
        }
        match Errno::last() {
            Errno::EINVAL if cap > 0 => return Ok(()),
            e => {
                return Err(fail(
                    "drop_capabilities",
                    e,
                    format_args!("drop capability {cap} from the bounding set"),
                ));
            }
        }
    }
    Ok(())
}

/// Sets and locks [`SECUREBITS`]. Needs CAP_SETPCAP.
pub(super) fn lock_securebits() -> Result<(), InitError> {
    // SAFETY: PR_SET_SECUREBITS takes an integer and touches no memory of ours.
    if unsafe {
        libc::prctl(
            libc::PR_SET_SECUREBITS,
            SECUREBITS as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(fail(
            "securebits",
            Errno::last(),
            format_args!("set and lock the securebits {SECUREBITS:#x}"),
        ));
    }
    Ok(())
}

/// Makes every permitted capability effective again (after a change of uid with
/// `PR_SET_KEEPCAPS`, which keeps the permitted set but empties the effective one).
pub(super) fn raise_permitted() -> Result<(), InitError> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two data structs for version 3 into `data`, which has room
    // for exactly those; it reads the header.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &header as *const CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc == 0 {
        for d in &mut data {
            d.effective = d.permitted;
        }
        // SAFETY: as in `clear_all`: a header and two data structs of the kernel's layout.
        let rc =
            unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
        if rc == 0 {
            return Ok(());
        }
    }
    Err(fail(
        "user_namespace",
        Errno::last(),
        format_args!("raise the capabilities kept across the change of user"),
    ))
}

/// Empties the ambient, inheritable, permitted and effective sets.
pub(super) fn clear_all() -> Result<(), InitError> {
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integers and touches no memory of ours.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(fail(
            "drop_capabilities",
            Errno::last(),
            format_args!("clear the ambient capabilities"),
        ));
    }
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads one header and, for version 3, two data structs; both pointers
    // are to live values of exactly those layouts.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(fail(
            "drop_capabilities",
            Errno::last(),
            format_args!("clear the permitted, effective and inheritable capabilities"),
        ));
    }
    Ok(())
}

/// Takes away what lets an unprivileged process raise its scheduling above everyone's:
/// RLIMIT_RTPRIO (real-time policies, SCHED_FIFO and SCHED_RR, which a busy loop can hold
/// a CPU with) and RLIMIT_NICE (negative nice values), both soft and hard to 0. A job
/// inherits the server's limits, and a server started with raised ones (limits.conf, a
/// unit's LimitRTPRIO=) would otherwise pass them on. Allocates nothing.
pub(super) fn drop_scheduling_limits() -> Result<(), InitError> {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    for (resource, name) in [
        (libc::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
        (libc::RLIMIT_NICE, "RLIMIT_NICE"),
    ] {
        // SAFETY: setrlimit reads a struct that lives on this stack for the call.
        if unsafe { libc::setrlimit(resource, &none) } != 0 {
            return Err(fail(
                "rlimit",
                Errno::last(),
                format_args!("set {name} to 0"),
            ));
        }
    }
    Ok(())
}

/// Sets no_new_privs: no execve of this process or its descendants can gain a privilege
/// (setuid bits and file capabilities are ignored). It is also what lets an unprivileged
/// process install a seccomp filter.
pub(super) fn set_no_new_privs() -> Result<(), InitError> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(fail(
            "no_new_privs",
            Errno::last(),
            format_args!("set no_new_privs"),
        ));
    }
    Ok(())
}
