//! The server's certificates over time: its own renewed before they end, and its TLS
//! configuration read again as soon as a file of the certs directory changes (a renewal, a
//! revocation by `silo certs revoke`, a certificate replaced by hand).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use silo_tls::{RenewReport, ServerTls, TlsError};
use time::OffsetDateTime;
use tokio_stream::StreamExt;

/// How often the certs directory is looked at where inotify cannot watch it.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// How long after the first change of the certs directory its files are read: the time
/// the rest of a renewal's or a revocation's writes take.
const SETTLE: Duration = Duration::from_millis(100);

/// The longest sleep without a look at the clock: the wall clock a renewal is due by may
/// jump (a suspended host, a corrected clock), tokio's timers do not.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// How long after a renewal that left a certificate due (its CA ends first, or it failed)
/// the next one is tried.
const RETRY_AFTER: time::Duration = time::Duration::hours(1);

/// Issues anew those of the server's, admin's and viewer's certificates in `dir` that are
/// near their end (see [`silo_tls::renew_due`]), and says what it did.
pub fn renew(dir: &std::path::Path, sans: &[String]) -> Result<RenewReport, TlsError> {
    let report = silo_tls::renew_due(dir, sans, OffsetDateTime::now_utc())?;
    for renewed in &report.renewed {
        tracing::info!(
            "renewed {} ({}; the old one was valid until {}, the new one until {})",
            renewed.cert.display(),
            renewed.why,
            renewed.was_valid_until.date(),
            renewed.valid_until.date()
        );
    }
    if let Some(ends) = report.ca_ends {
        tracing::warn!(
            "silo's CA ({}) ends on {}, within {} days: the certificates it signs cannot be \
             renewed past it; make a new CA with `silo certs init` and give clients its \
             ca.pem",
            dir.join("ca.pem").display(),
            ends.date(),
            silo_tls::RENEW_BEFORE.whole_days()
        );
    }
    Ok(report)
}

/// Watches the certs directory `dir` for as long as the server runs: has `tls` read the
/// files again when one changes (told by inotify; polled every [`POLL_EVERY`] only where
/// inotify cannot start), and renews the certificates when they come due (it sleeps until
/// then).
pub fn watch(tls: Arc<ServerTls>, dir: PathBuf, sans: Vec<String>) {
    tokio::spawn(async move {
        let mut events = match dir_events(&dir) {
            Ok(events) => Some(events),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} with inotify ({e}): it is looked at every {} s",
                    dir.display(),
                    POLL_EVERY.as_secs()
                );
                None
            }
        };
        let mut due = next_due(&dir);
        let mut last_error: Option<String> = None;
        loop {
            let until_due = due.map_or(LONGEST_SLEEP, |due| {
                let left = due - OffsetDateTime::now_utc();
                Duration::try_from(left).unwrap_or(Duration::ZERO)
            });
            let sleep = tokio::time::sleep(until_due.min(LONGEST_SLEEP));
            let changed = match events.as_mut() {
                Some(stream) => tokio::select! {
                    event = stream.next() => match event {
                        Some(_) => {
                            // A renewal or a revocation writes a few files at once: read
                            // them once they are all there.
                            tokio::time::sleep(SETTLE).await;
                            while let Some(Some(_)) = stream.next().now_or_never() {}
                            true
                        }
                        None => {
                            events = None;
                            true
                        }
                    },
                    () = sleep => false,
                },
                None => {
                    tokio::time::sleep(until_due.min(POLL_EVERY)).await;
                    true
                }
            };
            let now = OffsetDateTime::now_utc();
            let renewing = due.is_some_and(|due| due <= now);
            if renewing {
                let renewed = {
                    let (dir, sans) = (dir.clone(), sans.clone());
                    tokio::task::spawn_blocking(move || renew(&dir, &sans)).await
                };
                match renewed {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("cannot renew the server's certificates: {e}"),
                    Err(e) => tracing::error!("the certificate renewal was lost: {e}"),
                }
                // What is still due (its CA ends first, or the renewal failed) is tried
                // again later, not at once.
                due = next_due(&dir).map(|due| due.max(now + RETRY_AFTER));
            }
            if !changed && !renewing {
                continue;
            }
            let reloaded = {
                let tls = tls.clone();
                tokio::task::spawn_blocking(move || tls.reload_if_changed()).await
            };
            match reloaded {
                Ok(Ok(changed)) => {
                    last_error = None;
                    if changed {
                        tracing::info!(
                            "read the certificates again: the server certificate ends on {}",
                            tls.server_certificate_ends().date()
                        );
                        // A new list may revoke one of the kept certificates: due now.
                        if !renewing {
                            due = next_due(&dir);
                        }
                    }
                }
                // Once per distinct error: a pair half replaced by hand is retried quietly.
                Ok(Err(e)) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(&text) {
                        tracing::warn!(
                            "cannot read the certificates again (the ones in use stay): {text}"
                        );
                        last_error = Some(text);
                    }
                }
                Err(e) => tracing::error!("reading the certificates again was lost: {e}"),
            }
        }
    });
}

/// The inotify events of `dir`: a file written, renamed in or out, created or removed.
fn dir_events(dir: &Path) -> std::io::Result<inotify::EventStream<Vec<u8>>> {
    let inotify = inotify::Inotify::init()?;
    inotify.watches().add(
        dir,
        inotify::WatchMask::CLOSE_WRITE
            | inotify::WatchMask::MOVED_TO
            | inotify::WatchMask::MOVED_FROM
            | inotify::WatchMask::CREATE
            | inotify::WatchMask::DELETE,
    )?;
    inotify.into_event_stream(vec![0u8; 4096])
}

/// When the next of the certs directory's certificates is due for renewal.
fn next_due(dir: &Path) -> Option<OffsetDateTime> {
    match silo_tls::next_renewal(dir) {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!("cannot read when the certificates end: {e}");
            None
        }
    }
}
