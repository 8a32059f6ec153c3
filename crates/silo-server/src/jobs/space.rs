//! The state filesystem's free space, which every job's disk draws on.
//!
//! A job's `/work` is a sparse image on the state filesystem: its size is a bound, not a
//! reservation, so jobs together (or one job whose disk is larger than what is free) can
//! fill the filesystem. Past that point the loop device's writes fail under the jobs'
//! filesystems (their data is lost after `write` said it was written: "failed to convert
//! unwritten extents" in the kernel's log) and the server's own store and logs have no
//! room. So the server watches the free space, and when it falls under `--state-reserve`
//! it stops the job whose disk grew most since the last look (FAILED, end cause
//! DISK_FULL, the reason saying so), one job a look, until the space is back. A job whose
//! disk does not grow is never chosen. When no disk grows but the free space still falls,
//! the jobs that write to the filesystem directly (a runtime build's step installing into
//! its tree, a job without a disk of its own) are stopped; when none runs, the server only
//! says so.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::JobManager;
use super::live::StopCause;

/// How often the free space is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Watches the filesystem of the manager's jobs directory for as long as the server runs;
/// nothing when `reserve` is 0.
pub fn watch(manager: JobManager, reserve: u64) {
    if reserve == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut last_free = None;
        let mut warned = false;
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            let dir = manager.inner.settings.jobs_dir.clone();
            let looked = tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || free_bytes(&dir)
            });
            let Ok(Some(free)) = looked.await else {
                continue;
            };
            let filling = last_free.is_some_and(|before| free < before);
            last_free = Some(free);
            // Far from the reserve, the disks are not measured (a stat per live job five
            // times a second); their growth counts from the first look nearer to it.
            if free >= reserve.saturating_mul(2) {
                last.clear();
                warned = false;
                continue;
            }
            let live = manager.live_jobs();
            let ids: Vec<String> = live.iter().map(|j| j.id.clone()).collect();
            let Ok(disks) = tokio::task::spawn_blocking(move || disk_bytes(&dir, ids)).await else {
                continue;
            };
            let grown = disks.iter().filter_map(|(id, now)| {
                let before = last.get(id).copied().unwrap_or(*now);
                (*now > before).then_some((id.clone(), now - before, *now))
            });
            let victim = grown.max_by_key(|(_, growth, _)| *growth);
            last = disks;
            if free >= reserve {
                warned = false;
                continue;
            }
            let say = |what: &str| {
                tracing::warn!(
                    "the state filesystem has {free} bytes free, under --state-reserve \
                     {reserve}: {what}"
                );
            };
            if let Some((id, _, work)) = victim {
                if let Some(job) = manager.live(&id) {
                    say(&format!(
                        "stopping job {id}, whose disk grew most ({work} bytes)"
                    ));
                    job.begin_stop(
                        StopCause::DiskFull {
                            free,
                            work: Some(work),
                        },
                        Duration::ZERO,
                    );
                }
                warned = false;
                continue;
            }
            // No disk grows. What writes to the filesystem directly (a runtime build's
            // step, a job without a disk) cannot be measured one by one: while it still
            // fills, each such job is stopped.
            let direct: Vec<_> = live
                .iter()
                .filter(|j| j.writes_state.load(Ordering::Relaxed) && !j.has_ended())
                .collect();
            if filling && !direct.is_empty() {
                for job in direct {
                    say(&format!(
                        "stopping job {}, which writes to it directly (no disk grows)",
                        job.id
                    ));
                    job.begin_stop(StopCause::DiskFull { free, work: None }, Duration::ZERO);
                }
                warned = false;
            } else if !warned {
                say(if direct.is_empty() {
                    "no job's disk grows, and no job writes to it directly"
                } else {
                    "no job's disk grows, and it is not filling now"
                });
                warned = true;
            }
        }
    });
}

/// The bytes anyone may still take on the filesystem of `dir` (blocks reserved for root,
/// which loop devices' writes may use too, left out).
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// The default `--state-reserve` for the filesystem of `dir`: 5 % of it, at most 1 GiB.
pub fn default_reserve(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|stat| {
            let size = stat.blocks().saturating_mul(stat.fragment_size());
            (size / 20).min(1 << 30)
        })
        .unwrap_or(1 << 30)
}

/// The bytes each job's disk image holds now (its allocated blocks), for the jobs `ids`
/// that have one.
fn disk_bytes(jobs_dir: &Path, ids: Vec<String>) -> HashMap<String, u64> {
    ids.into_iter()
        .filter_map(|id| {
            let image = jobs_dir.join(&id).join(super::disks::DISK_IMAGE);
            let meta = std::fs::symlink_metadata(image).ok()?;
            Some((id, meta.blocks().saturating_mul(512)))
        })
        .collect()
}
