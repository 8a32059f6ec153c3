//! Who the command runs as: its uid, gid and supplementary groups.

use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

use super::fail;
use crate::protocol::InitError;

/// Sets the real, effective and saved uid to `uid` and gid to `gid`, with `gid` as the only
/// supplementary group. The groups go first and the uid last: each of the earlier steps
/// needs a privilege that the uid change may take away.
pub(super) fn become_user(uid: u32, gid: u32) -> Result<(), InitError> {
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    setgroups(&[g]).map_err(|e| {
        fail(
            "setgroups",
            e,
            format_args!("set the supplementary groups to [{gid}]"),
        )
    })?;
    setresgid(g, g, g)
        .map_err(|e| fail("setresgid", e, format_args!("set the group ids to {gid}")))?;
    setresuid(u, u, u).map_err(|e| fail("setresuid", e, format_args!("set the user ids to {uid}")))
}
