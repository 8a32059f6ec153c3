//! Who is calling: the verified client certificate's CN and role, attached to every
//! connection by the TLS listener and checked per call.

use std::sync::Arc;

use silo_tls::{PeerIdentity, Role, ServerTls};
use tonic::{Request, Status};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Get, list, logs, watch, stats: admin and viewer.
    Read,
    /// Run, stop, delete: admin only.
    Write,
}

/// The identity of the connection a request came in on, as the listener recorded it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified identity, or `None` when the certificate could not be read.
    pub identity: Option<PeerIdentity>,
    /// The server's TLS state, which knows the certificates revoked since the connection
    /// was made (none in tests that build a caller by hand).
    pub tls: Option<Arc<ServerTls>>,
}

/// The caller's CN when its role allows `access`; PermissionDenied otherwise.
pub fn authorize<T>(request: &Request<T>, access: Access, what: &str) -> Result<String, Status> {
    authorize_identity(request, access, what).map(|(name, _)| name)
}

/// As [`authorize`], with the caller's role too.
pub fn authorize_identity<T>(
    request: &Request<T>,
    access: Access,
    what: &str,
) -> Result<(String, Role), Status> {
    let caller = request.extensions().get::<Caller>();
    let identity = caller.and_then(|c| c.identity.clone()).ok_or_else(|| {
        Status::permission_denied("no verified client certificate on this connection")
    })?;
    // A connection outlives a revocation: each call checks the list of the moment.
    if caller
        .and_then(|c| c.tls.as_ref())
        .is_some_and(|tls| tls.is_revoked(&identity.serial))
    {
        return Err(Status::permission_denied(format!(
            "the certificate of {} (serial {}) has been revoked",
            identity.common_name,
            silo_tls::hex(&identity.serial)
        )));
    }
    match (identity.role, access) {
        (Some(role @ Role::Admin), _) | (Some(role @ Role::Viewer), Access::Read) => {
            Ok((identity.common_name, role))
        }
        (Some(Role::Viewer), Access::Write) => Err(Status::permission_denied(format!(
            "{} has role viewer, which may only read; {what} needs role admin",
            identity.common_name
        ))),
        (None, _) => Err(Status::permission_denied(format!(
            "the certificate of {} has no known role (its OU must be admin or viewer)",
            identity.common_name
        ))),
    }
}
