//! Starting inits: cloned from the init zygote (see [`silo_sandbox::zygote`]) while it
//! works, else by re-executing the binary. Either way the init is the server's child, in
//! the same namespaces and cgroup, with the same descriptors.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use silo_sandbox::spawn::{InitProcess, SpawnRequest, spawn_init};
use silo_sandbox::zygote::{Zygote, ZygoteError};

/// How long after a zygote failed to start the next start is tried.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Starts inits; one request to the zygote at a time.
pub(super) struct InitSpawner {
    enabled: bool,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    zygote: Option<Zygote>,
    /// When a failed start may be tried again.
    retry_at: Option<Instant>,
}

impl InitSpawner {
    /// A spawner that starts its zygote at its first request (`enabled`), or never.
    pub(super) fn new(enabled: bool) -> Self {
        InitSpawner {
            enabled,
            slot: Mutex::default(),
        }
    }

    /// Starts an init. Blocks for the clone (and, the first time, the zygote's start).
    pub(super) fn spawn(&self, req: &SpawnRequest<'_>) -> io::Result<InitProcess> {
        if !self.enabled {
            return spawn_init(req);
        }
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.zygote.is_none() && slot.retry_at.is_none_or(|at| Instant::now() >= at) {
            match Zygote::start(req.exe) {
                Ok(zygote) => {
                    tracing::debug!(pid = zygote.pid(), "init zygote started");
                    slot.zygote = Some(zygote);
                    slot.retry_at = None;
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot start the init zygote ({e}); inits re-execute the binary \
                         until it starts"
                    );
                    slot.retry_at = Some(Instant::now() + RETRY_AFTER);
                }
            }
        }
        let Some(zygote) = slot.zygote.as_ref() else {
            drop(slot);
            return spawn_init(req);
        };
        match zygote.spawn(req) {
            Ok(init) => Ok(init),
            Err(ZygoteError::Spawn(e)) => Err(e),
            Err(ZygoteError::Broken(e)) => {
                tracing::warn!("{e}; starting another for the next init");
                // Dropping it kills and reaps it.
                slot.zygote = None;
                drop(slot);
                spawn_init(req)
            }
        }
    }
}
