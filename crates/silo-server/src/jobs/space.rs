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
//! /shared) are stopped; when none runs, the server only says so. Those jobs alone take
//! the filesystem's inodes (a disk or a log is one file), so they are stopped too when the
//! free inodes fall under [`inode_reserve`] and keep falling.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::JobManager;
use super::live::{Free, LiveJob, Room, StopCause};

/// How often the free space is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// Far from the reserve (twice it free or more), the jobs are measured only every this
/// many looks: enough for a baseline when one burst brings the space under the reserve
/// between two looks.
const FAR_LOOKS_PER_MEASURE: u32 = 5;
/// The share of the filesystem's inodes the watch keeps free: one in twenty, at most a
/// million.
fn inode_reserve(total: u64) -> u64 {
    (total / 20).min(1_000_000)
}

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
        let mut last_inodes = None;
        let mut warned = false;
        let mut looks: u32 = 0;
        // The first look at once: what a job takes from the server's start on is a fall.
        let mut ticks = tokio::time::interval(LOOK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            looks = looks.wrapping_add(1);
            let dir = manager.inner.settings.jobs_dir.clone();
            let looked = tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || left_on(&dir)
            });
            let Ok(Some(Left {
                bytes: free,
                inodes,
            })) = looked.await
            else {
                continue;
            };
            let filling = last_free.is_some_and(|before| free < before);
            last_free = Some(free);
            // Inodes: only what writes to the filesystem directly takes them (a job's disk
            // and log are one file each), and no file count can be had per job.
            if let Some((free_inodes, total)) = inodes {
                let taking = last_inodes.is_some_and(|before| free_inodes < before);
                last_inodes = Some(free_inodes);
                if free_inodes < inode_reserve(total) && taking {
                    let live = manager.live_jobs();
                    if live.iter().any(|j| writes_directly(j)) {
                        tracing::warn!(
                            "the state filesystem has {free_inodes} inodes free, under the \
                             {} the server keeps",
                            inode_reserve(total)
                        );
                        stop_direct_writers(&live, Free::Inodes(free_inodes));
                        continue;
                    }
                }
            }
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
                            free: Free::Bytes(free),
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
            let direct = live.iter().any(|j| writes_directly(j));
            if filling && direct {
                say("no job's disk or log grows: stopping the jobs that write to it directly");
                stop_direct_writers(&live, Free::Bytes(free));
                warned = false;
            } else if !warned {
                say(if direct {
                    "no job's disk or log grows, and it is not filling now"
                } else {
                    "no job's disk or log grows, and no job writes to it directly"
                });
                warned = true;
            }
        }
    });
}

/// Whether `job` runs and can write to the state filesystem outside its disk and log.
fn writes_directly(job: &LiveJob) -> bool {
    job.writes_state.load(Ordering::Relaxed) && !job.has_ended()
}

/// Stops every job of `live` that writes to the state filesystem directly (their writes
/// cannot be measured one by one), the reason saying what was left.
fn stop_direct_writers(live: &[std::sync::Arc<LiveJob>], free: Free) {
    for job in live.iter().filter(|j| writes_directly(j)) {
        tracing::warn!(
            "stopping job {}, which writes to the state filesystem directly",
            job.id
        );
        job.begin_stop(StopCause::DiskFull { free, grew: None }, Duration::ZERO);
    }
}

/// What is left on a filesystem.
struct Left {
    /// The bytes anyone may still take (blocks reserved for root, which loop devices'
    /// writes may use too, left out).
    bytes: u64,
    /// The inodes anyone may still take and all of them, where the filesystem counts them.
    inodes: Option<(u64, u64)>,
}

/// What is left on the filesystem of `dir`.
fn left_on(dir: &Path) -> Option<Left> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    let total = stat.files();
    Some(Left {
        bytes: stat.blocks_available().saturating_mul(stat.fragment_size()),
        inodes: (total > 0).then(|| (stat.files_available(), total)),
    })
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
