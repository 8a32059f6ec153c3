//! What the API's job states mean beyond their names.

use crate::v1::JobState;

impl JobState {
    /// Whether a job in this state has ended for good: completed, failed or stopped. No
    /// other state follows one of these.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Stopped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_completed_failed_and_stopped_are_final() {
        let final_states = [JobState::Completed, JobState::Failed, JobState::Stopped];
        let other_states = [
            JobState::Unspecified,
            JobState::Scheduled,
            JobState::Starting,
            JobState::Running,
        ];
        assert!(final_states.iter().all(|s| s.is_final()));
        assert!(!other_states.iter().any(|s| s.is_final()));
    }
}
