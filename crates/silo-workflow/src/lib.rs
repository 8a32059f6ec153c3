//! Workflows apart from the server: the YAML spec ([`spec`]), pictures of the job graph
//! ([`graph`]) and a pure, deterministic scheduler state machine ([`schedule`]).
//!
//! Nothing here does I/O, spawns threads or reads clocks: the caller passes the YAML text
//! in, the current time in milliseconds, and each job's end, and gets back what to do.

pub mod graph;
pub mod schedule;
pub mod spec;

pub use graph::{Format, render};
pub use schedule::{Action, Node, NodeState, Outcome, Run, RunState};
pub use spec::{
    Condition, JobSpec, Location, Requirement, Resources, Retry, SpecError, WorkflowSpec,
};
