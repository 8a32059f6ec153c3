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

impl std::fmt::Debug for v1::SecretVar {
    /// The name only: a secret's value never appears in debug output (logs, panics).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVar")
            .field("name", &self.name)
            .field("value", &"<hidden>")
            .finish()
    }
}

/// The encoded file descriptor set of every silo proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/silo_descriptor.bin"));

#[cfg(test)]
mod tests {
    #[test]
    fn a_secret_value_never_shows_in_debug_output() {
        let spec = super::v1::JobSpec {
            secret_env: vec![super::v1::SecretVar {
                name: "TOKEN".into(),
                value: "hunter2".into(),
            }],
            ..Default::default()
        };
        let shown = format!("{spec:?} {spec:#?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
