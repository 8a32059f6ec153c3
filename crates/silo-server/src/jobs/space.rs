//! The state filesystem's free space, which every job's disk draws on.
//!
//! A job's `/work` is a sparse image on the state filesystem: its size is a bound, not a
//! reservation, so jobs together (or one job whose disk is larger than what is free) can
//! fill the filesystem. Past that point the loop device's writes fail under the jobs'
//! filesystems (their data is lost after `write` said it was written: "failed to convert
//! unwritten extents" in the kernel's log) and the server's own store and logs have no
//! room. So the server watches the free space, and when it falls under `--state-reserve`
//! it stops the job whose disk or log grew most since the last look (FAILED, end cause
//! DISK_FULL, the reason saying so), one job a look, until the space is back. A job whose
//! disk and log do not grow is never chosen. (A log is bounded by `--log-cap`, but every
//! job's output is held back once the filesystem is full: one job printing without end
//! would stall the others' output.) When nothing measured grows but the free space still
//! falls, the jobs that can write to the filesystem directly (a runtime build's step
//! installing into its tree, a job without a disk of its own, a workflow's job through its
//! /shared) are stopped; when none runs, the server only says so.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::JobManager;
use super::live::{Room, StopCause};

/// How often the free space is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// Far from the reserve (twice it free or more), the jobs are measured only every this
/// many looks: enough for a baseline when one burst brings the space under the reserve
/// between two looks.
const FAR_LOOKS_PER_MEASURE: u32 = 5;
/// What a job's disk image or log holds from its start (the log's room kept ahead is about
/// 2.4 MB, a new image's blocks under 1 MB): a job first measured after it grew beyond this
/// (one that started and wrote at once) counts its growth from it.
const HELD_AT_START: u64 = 4 << 20;

/// Watches the filesystem of the manager's jobs directory for as long as the server runs;
/// nothing when `reserve` is 0.
pub fn watch(manager: JobManager, reserve: u64) {
    if reserve == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut last: HashMap<(String, Room), u64> = HashMap::new();
        let mut last_free = None;
        let mut warned = false;
        let mut looks: u32 = 0;
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            looks = looks.wrapping_add(1);
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
            // Far from the reserve, the jobs are measured once a second (two stats per live
            // job), not five times: their growth then counts from that measure, so that a job
            // that takes the space down to the reserve between two looks is still seen.
            if free >= reserve.saturating_mul(2) && !looks.is_multiple_of(FAR_LOOKS_PER_MEASURE) {
                warned = false;
                continue;
            }
            let live = manager.live_jobs();
            let ids: Vec<String> = live.iter().map(|j| j.id.clone()).collect();
            let Ok(held) = tokio::task::spawn_blocking(move || held_bytes(&dir, ids)).await else {
                continue;
            };
            let grown = held.iter().filter_map(|(key, now)| {
                let before = last.get(key).copied().unwrap_or(HELD_AT_START.min(*now));
                (*now > before).then_some((key.clone(), now - before, *now))
            });
            let victim = grown.max_by_key(|(_, growth, _)| *growth);
            last = held;
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
            if let Some(((id, room), _, bytes)) = victim {
                if let Some(job) = manager.live(&id) {
                    let what = match room {
                        Room::Work => "disk",
                        Room::Log => "log",
                    };
                    say(&format!(
                        "stopping job {id}, whose {what} grew most ({bytes} bytes)"
                    ));
                    job.begin_stop(
                        StopCause::DiskFull {
                            free,
                            grew: Some((room, bytes)),
                        },
                        Duration::ZERO,
                    );
                }
                warned = false;
                continue;
            }
            // Nothing measured grows. What writes to the filesystem directly (a runtime build's
            // step, a job without a disk, a workflow's /shared) cannot be measured one by one:
            // while it still fills, each such job is stopped.
            let direct: Vec<_> = live
                .iter()
                .filter(|j| j.writes_state.load(Ordering::Relaxed) && !j.has_ended())
                .collect();
            if filling && !direct.is_empty() {
                for job in direct {
                    say(&format!(
                        "stopping job {}, which writes to it directly (no disk or log grows)",
                        job.id
                    ));
                    job.begin_stop(StopCause::DiskFull { free, grew: None }, Duration::ZERO);
                }
                warned = false;
            } else if !warned {
                say(if direct.is_empty() {
                    "no job's disk or log grows, and no job writes to it directly"
                } else {
                    "no job's disk or log grows, and it is not filling now"
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

/// The bytes each job's disk image and log hold now (their allocated blocks, the log's
/// room kept ahead included), for the jobs `ids`; a job without a disk has only its log.
fn held_bytes(jobs_dir: &Path, ids: Vec<String>) -> HashMap<(String, Room), u64> {
    let allocated =
        |path: std::path::PathBuf| Some(std::fs::symlink_metadata(path).ok()?.blocks() * 512);
    let mut held = HashMap::new();
    for id in ids {
        let dir = jobs_dir.join(&id);
        if let Some(bytes) = allocated(dir.join(super::disks::DISK_IMAGE)) {
            held.insert((id.clone(), Room::Work), bytes);
        }
        if let Some(bytes) = allocated(dir.join("log")) {
            held.insert((id, Room::Log), bytes);
        }
    }
    held
}
