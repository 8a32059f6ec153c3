//! Start-up reconciliation: jobs a previous server left unfinished are adopted again when
//! their init still runs, and otherwise ended with what their log says (or as FAILED,
//! "server restarted").

use std::path::PathBuf;
use std::sync::Arc;

use silo_sandbox::spawn::pidfd_open;

use super::live::LiveJob;
use super::outcome::Outcome;
use super::{JobError, JobManager};
use crate::store::JobRow;

/// The exit record in the job's log at `path`, read on a blocking thread (the whole log is
/// read, from its start).
async fn read_exit(path: PathBuf) -> Option<silo_sandbox::protocol::ExitStatus> {
    tokio::task::spawn_blocking(move || crate::logs::read_exit(&path))
        .await
        .ok()
        .flatten()
}

/// The start time of `pid` in clock ticks after boot (field 22 of /proc/PID/stat), which
/// tells a process from a later one that reuses its pid.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after the
    // last ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl JobManager {
    pub(super) async fn reconcile(&self) -> Result<(), JobError> {
        for row in self.inner.store.unfinished().await? {
            let alive = row
                .init
                .filter(|(pid, ticks)| process_start_ticks(*pid) == Some(*ticks))
                .and_then(|(pid, _)| pidfd_open(pid).ok());
            match alive {
                Some(pidfd) => {
                    tracing::info!(job = %row.id, "adopting a job that kept running across the restart");
                    self.adopt(row, pidfd)?;
                }
                None => {
                    let live = Arc::new(LiveJob::new(row.clone()));
                    if let Some(cg) = self.open_cgroup(&row.id) {
                        live.set_cgroup(cg);
                    }
                    let outcome = match read_exit(self.log_path(&row.id)).await {
                        Some(exit) => Outcome::of_run(None, Some(exit), None),
                        None => Outcome::server_restart(),
                    };
                    tracing::info!(job = %row.id, state = ?outcome.state, "ending a job left by the previous server");
                    self.finish(&live, outcome, None).await;
                    self.release_cgroup(&live).await;
                    self.free_disk_of(&row.id).await;
                }
            }
        }
        Ok(())
    }

    /// Frees the disk of job `id`, which ended (see [`super::disks::free_disk`]), and the
    /// room kept ahead of its log.
    async fn free_disk_of(&self, id: &str) {
        let dir = self.job_dir(id);
        let _ = tokio::task::spawn_blocking(move || {
            super::disks::free_disk(&dir);
            super::disks::release_log_room(&dir);
        })
        .await;
    }

    /// The cgroup a previous server created for job `id`, if it is still there.
    fn open_cgroup(&self, id: &str) -> Option<silo_cgroup::JobCgroup> {
        self.inner.settings.cgroups.as_ref()?.open_job(id).ok()
    }

    /// Kills and removes job cgroups that belong to no running job (left by a crash).
    pub(super) async fn remove_stray_cgroups(&self) {
        let Some(root) = self.inner.settings.cgroups.clone() else {
            return;
        };
        let live: Vec<String> = self
            .inner
            .live
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || {
            for id in root.leftover_jobs().unwrap_or_default() {
                if live.contains(&id) {
                    continue;
                }
                if let Ok(cg) = root.open_job(&id) {
                    tracing::info!(job = %id, "removing a job cgroup left by an earlier server");
                    let _ = cg.kill_all();
                    if let Err(e) = cg.remove() {
                        tracing::warn!(job = %id, "cannot remove a stray job cgroup: {e}");
                    }
                }
            }
        })
        .await;
    }

    /// Removes job directories that have no job in the store: those of ready inits of an
    /// earlier server, which never got a job.
    pub(super) async fn remove_stray_dirs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.inner.settings.jobs_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() != 32 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            if let Err(crate::store::StoreError::NotFound(_)) = self.inner.store.get(&name).await {
                let _ = crate::tree::remove_dir_all(entry.path());
            }
        }
    }

    /// Tracks a running job whose init is no longer our child: waits for it to exit, then
    /// reads the exit from the log the init wrote.
    fn adopt(&self, mut row: JobRow, pidfd: std::os::fd::OwnedFd) -> Result<(), JobError> {
        // A crash between storing the job and recording its start leaves it STARTING. Its
        // init may have been given the job, or may be a ready init about to die with the
        // server that prepared it (it has the server's death as its own signal): whether
        // the command ever ran is told by the end, an exit report or none. Its start time
        // stays unknown.
        let was_starting = row.state == silo_proto::v1::JobState::Starting;
        if was_starting {
            row.state = silo_proto::v1::JobState::Running;
        }
        if let Some(id) = row.host_id {
            self.inner.host_ids.hold(id);
        }
        let live = Arc::new(LiveJob::new(row));
        // It counts against the cap like any job. More jobs than the cap (a restart with a
        // lower --max-jobs) still run; those over it take the first places that free up,
        // before any new job.
        match self.inner.slots.clone().try_acquire_owned() {
            Ok(slot) => live.hold_slot(slot),
            Err(_) => {
                tracing::warn!(job = %live.id, "adopting a job past --max-jobs: new jobs are refused until enough jobs end");
            }
        }
        if let Some(cg) = self.open_cgroup(&live.id) {
            live.set_cgroup(cg);
        }
        if let Ok(dup) = pidfd.try_clone() {
            live.set_pidfd(dup);
        }
        if let Ok(mut map) = self.inner.live.lock() {
            map.insert(live.id.clone(), live.clone());
        }
        let log_path = self.log_path(&live.id);
        let watch = self.inner.logs.watch(&log_path, live.progress.clone()).ok();
        let manager = self.clone();
        tokio::spawn(async move {
            let exited = async {
                if let Ok(fd) = super::supervisor::watch_pidfd(pidfd) {
                    let _ = fd.readable().await;
                }
            };
            let mut exited = std::pin::pin!(exited);
            let mut has_exited = false;
            if !live.holds_slot() {
                tokio::select! {
                    () = &mut exited => has_exited = true,
                    Ok(slot) = manager.inner.slots.clone().acquire_owned() => live.hold_slot(slot),
                }
            }
            if !has_exited {
                exited.await;
            }
            if let Some(wd) = watch {
                manager.inner.logs.unwatch(wd);
            }
            // Debug builds: a test delays the end of an adopted job, as a busy server
            // would, to check what sees it before its end is recorded.
            #[cfg(debug_assertions)]
            super::test_delay("SILO_TEST_DELAY_ADOPTED_END_MS").await;
            let exit = read_exit(log_path).await;
            let outcome = match (exit, live.stop_cause()) {
                // Adopted while starting and ended without running a command to its end:
                // as far as anyone can tell, the command never ran.
                (None, None) if was_starting => Outcome::server_restart(),
                (exit, stop) => Outcome::of_run(stop, exit, None),
            };
            manager.finish(&live, outcome, None).await;
            manager.release_cgroup(&live).await;
            manager.free_disk_of(&live.id).await;
            manager.give_back_host_id(&live);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_of_this_process_are_stable_and_of_a_missing_pid_absent() {
        let me = std::process::id() as i32;
        let a = process_start_ticks(me);
        assert!(a.is_some());
        assert_eq!(a, process_start_ticks(me));
        assert_eq!(process_start_ticks(i32::MAX), None);
    }
}
