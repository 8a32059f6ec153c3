//! The job's network with [`crate::Network::None`]: its own network namespace, whose only
//! interface is the loopback, brought up here so that the job can talk to itself on
//! 127.0.0.1 and ::1 and to nothing else.

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

use super::fail;
use crate::protocol::InitError;

/// Sets IFF_UP on `lo` with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls any socket of the namespace
/// accepts; no external tool and no netlink are needed.
pub(super) fn bring_up_loopback() -> Result<(), InitError> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| fail("loopback", e, format_args!("open a socket to configure lo")))?;

    // SAFETY: ifreq is plain old data (a name and a union of integers and addresses); all
    // zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `req`, a valid,
    // exclusively borrowed ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        let e = Errno::last();
        return Err(fail("loopback", e, format_args!("read the flags of lo")));
    }
    // SAFETY: SIOCGIFFLAGS has just filled the `ifru_flags` member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the name and flags from `req`, valid for the whole call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        let e = Errno::last();
        return Err(fail("loopback", e, format_args!("bring lo up")));
    }
    Ok(())
}
