//! The server's certificates over time: its own renewed before they end, and its TLS
//! configuration read again when a file of the certs directory changes (a renewal, a
//! revocation by `silo certs revoke`, a certificate replaced by hand).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use silo_tls::{RenewReport, ServerTls, TlsError};
use time::OffsetDateTime;

/// How often the certs directory is looked at: a revocation takes effect within it.
const CHECK_EVERY: Duration = Duration::from_secs(2);

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

/// Watches the certs directory `dir` for as long as the server runs: renews its
/// certificates when they are due, and has `tls` read the files again when they change.
pub fn watch(tls: Arc<ServerTls>, dir: PathBuf, sans: Vec<String>) {
    tokio::spawn(async move {
        let every = check_interval();
        let mut due = next_due(&dir);
        let mut last_error: Option<String> = None;
        loop {
            tokio::time::sleep(every).await;
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
                // again later, not at every look.
                due = next_due(&dir).map(|due| due.max(now + RETRY_AFTER));
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

/// When the next of the certs directory's certificates is due for renewal.
fn next_due(dir: &std::path::Path) -> Option<OffsetDateTime> {
    match silo_tls::next_renewal(dir) {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!("cannot read when the certificates end: {e}");
            None
        }
    }
}

/// [`CHECK_EVERY`]; debug builds take `SILO_TEST_CERT_CHECK_MS` instead, for tests.
fn check_interval() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("SILO_TEST_CERT_CHECK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Duration::from_millis(ms);
    }
    CHECK_EVERY
}
