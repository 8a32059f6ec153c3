//! The node API: what the host looks like ([`host`]: /proc, statvfs, PSI), what its
//! running jobs use, sampled once per interval for every watcher ([`top`]), and the gRPC
//! NodeService over both ([`service`]).

pub mod host;
pub mod service;
pub mod top;
