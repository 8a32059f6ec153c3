//! The escape suite: a job's command written by an attacker who has read silo's source.
//! Every descriptor, file, path, kernel pool and frame a job can reach is tried here, each
//! in its own test, through a real server. Under `CI=true` none of them skips.

#[path = "../common/mod.rs"]
mod common;

mod cgroup_owner;
mod descriptors;
mod disk;
mod ipc;
mod kernel_pools;
mod oom;
mod setuid;
mod syscalls;
mod zygote;
