//! The host ids jobs run as: one per job, from a range the server reserves.
//!
//! Each job's command runs in its own user namespace, its user mapped to one host uid (and
//! the gid of the same number) that no other live job has. An id is given back only once
//! nothing of its job can run any more (its cgroup killed, its init reaped), so two jobs
//! never share what the kernel keeps per user: inotify instances, the process count,
//! ptrace and /proc access.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// A range of host ids and which of them live jobs hold.
#[derive(Debug)]
pub struct HostIds {
    first: u32,
    count: u32,
    taken: Mutex<BTreeSet<u32>>,
}

impl HostIds {
    /// The ids `first .. first + count`.
    pub fn new(first: u32, count: u32) -> HostIds {
        HostIds {
            first,
            count,
            taken: Mutex::default(),
        }
    }

    /// The lowest id no live job holds, now held; `None` when all are.
    pub fn take(&self) -> Option<u32> {
        let mut taken = self.taken.lock().ok()?;
        let id =
            (self.first..self.first.checked_add(self.count)?).find(|id| !taken.contains(id))?;
        taken.insert(id);
        Some(id)
    }

    /// Marks `id` as held (by a job adopted after a restart).
    pub fn hold(&self, id: u32) {
        if let Ok(mut taken) = self.taken.lock() {
            taken.insert(id);
        }
    }

    /// Gives `id` back once nothing of its job runs.
    pub fn give_back(&self, id: u32) {
        if let Ok(mut taken) = self.taken.lock() {
            taken.remove(&id);
        }
    }
}

/// Parses `FIRST:COUNT` (`--host-ids`).
pub fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let (first, count) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not FIRST:COUNT, like 2000000000:65536"))?;
    let first: u32 = first
        .parse()
        .map_err(|_| format!("{first:?} is not a host id"))?;
    let count: u32 = count
        .parse()
        .map_err(|_| format!("{count:?} is not a number of ids"))?;
    if first == 0
        || count == 0
        || first
            .checked_add(count)
            .is_none_or(|end| end > u32::MAX - 1)
    {
        return Err(format!(
            "{s:?}: the range must be non-empty, above 0 and below 4294967295"
        ));
    }
    Ok((first, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_live_job_gets_its_own_id_and_a_given_back_id_is_reused() {
        let ids = HostIds::new(1000, 3);
        assert_eq!(ids.take(), Some(1000));
        assert_eq!(ids.take(), Some(1001));
        ids.hold(1002);
        assert_eq!(ids.take(), None);
        ids.give_back(1001);
        assert_eq!(ids.take(), Some(1001));
    }

    #[test]
    fn ranges_parse_and_nonsense_is_refused() {
        assert_eq!(parse_range("2000000000:65536"), Ok((2_000_000_000, 65536)));
        for bad in ["", "5", "0:10", "10:0", "4294967290:100", "x:1", "1:y"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }
}
