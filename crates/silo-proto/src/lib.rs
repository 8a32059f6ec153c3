//! silo's wire API: the messages and gRPC services of `proto/silo/v1`, generated at build
//! time. Other languages generate their clients from the same `.proto` files.
//!
//! Beside the generated code: [`values`], the API's value syntax (sizes, CPU lists,
//! signal names), and what job states mean ([`v1::JobState::is_final`]).

mod job_state;
pub mod values;

/// Version 1 of the API.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("silo.v1");
}

/// The encoded file descriptor set of every silo proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/silo_descriptor.bin"));
