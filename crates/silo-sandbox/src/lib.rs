//! Everything a job's init process does, from the server's spawn to the job's exit.
//!
//! The server clones each init in new namespaces from its [`zygote`] (a fork-server that
//! re-executed the binary once), or re-executes its own binary with `SILO_MODE=init`
//! ([`spawn`]); that process runs [`init::run`]: it says hello over the [`protocol`],
//! receives an [`InitSpec`], builds the sandbox, starts the command, stays as PID 1 of
//! the job (reaping every zombie, forwarding signals, writing the job's output to its log)
//! and reports the exit. Nothing here uses an async runtime: the init is single-threaded.

pub mod disk;
pub mod init;
pub mod isolation;
pub mod protocol;
pub mod spawn;
mod spec;
pub mod zygote;

pub use spec::{
    DEFAULT_PATH, DEFAULT_TMP_INODES, InitSpec, Isolation, Network, Prepare, Rootfs, SandboxBase,
};
