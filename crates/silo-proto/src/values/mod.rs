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
