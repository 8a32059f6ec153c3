//! The API's value syntax: how sizes, CPU lists and signals are written as text, by people
//! on the command line, by the server in its messages and flags, and by other clients.
//!
//! Each rule here is the only copy in silo: the CLI, the server and the tools call these
//! functions rather than parse or format such values themselves.

mod cpu_list;
mod signal;
mod size;

pub use cpu_list::{CpuList, CpuListError, MAX_CPU};
pub use signal::signal_name;
pub use size::{MAX_SIZE, SizeError, format_size, parse_size, size_phrase};

/// The longest `JobSpec.timeout_ms` the server accepts: a year, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 365 * 24 * 3600 * 1000;
/// The longest grace period (`JobSpec.stop_grace_ms`, `StopJobRequest.grace_ms`) the server
/// accepts: an hour, in milliseconds.
pub const MAX_STOP_GRACE_MS: u64 = 3_600_000;
/// `WatchTopRequest.interval_ms` when the request leaves it 0.
pub const DEFAULT_TOP_INTERVAL_MS: u32 = 1000;
/// The shortest `WatchTopRequest.interval_ms` the server accepts.
pub const MIN_TOP_INTERVAL_MS: u32 = 200;
/// The longest `WatchTopRequest.interval_ms` the server accepts: a minute.
pub const MAX_TOP_INTERVAL_MS: u32 = 60_000;
