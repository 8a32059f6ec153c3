//! One file per client command.

pub mod certs;
pub mod delete;
pub mod info;
pub mod list;
pub mod logs;
pub mod node;
pub mod run;
pub mod runtime;
pub mod schedule;
pub mod stats;
pub mod status;
pub mod stop;
pub mod top;
pub mod workflow;
