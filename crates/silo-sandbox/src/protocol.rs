//! The init protocol: how the server and a job's init process talk.
//!
//! Frames travel over the socket the init inherits as [`CONTROL_FD`]: a 4-byte
//! little-endian length, then that many bytes of JSON `{"version", "kind", "body"}`.
//! The init speaks first with [`Message::Hello`] carrying [`PROTOCOL_VERSION`]; the server
//! refuses any other version. After that the server sends requests (a method name and
//! parameters) and the init answers each with a response carrying the same id, either a
//! result or an [`InitError`]. The init reports things nobody asked for (the job's exit) as
//! events. The methods are generic so that later kinds of children reuse the transport.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The version of this protocol; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// The descriptor number of the control socket in the init process.
pub const CONTROL_FD: i32 = 3;
/// The descriptor number of the job's log file (opened for appending) in the init process.
pub const LOG_FD: i32 = 4;

/// Largest frame the init accepts from the server (a start request carries the job's
/// whole command line and environment).
pub const MAX_FRAME: usize = 16 << 20;

/// Largest frame the server accepts from an init. An init only says hello, answers and
/// reports an exit, all far smaller; anything larger is a broken or subverted init, and
/// reading it must not cost the server more than this.
pub const MAX_INIT_FRAME: usize = 64 << 10;

/// Method: join the job's cgroups and build the job-independent part of the sandbox, as
/// described by a [`crate::Prepare`], and wait, without a deadline, for [`METHOD_START`]. Lets the
/// server keep inits ready before jobs arrive. The result is `null`.
pub const METHOD_PREPARE: &str = "sandbox.prepare";
/// Method: start the job described by a [`crate::InitSpec`]; the result is a [`Started`].
///
/// Mounts the init cannot make itself come as descriptors: right after the request frame,
/// the server sends one byte carrying (as `SCM_RIGHTS`), in this order, the job's own
/// filesystem when [`crate::Isolation::work_disk`] is set (a detached mount,
/// [`crate::disk::mount_detached`]), which the init moves to `/work`; then, when the init
/// was prepared with its job ([`crate::Prepare::job`]) and the job has a
/// [`crate::Isolation::shared_dir`], a detached mount of the shared directory
/// (`open_tree(OPEN_TREE_CLONE)`), which the init moves to `/shared` (it has entered the
/// job's root already and can no longer reach the host's directories). No byte is sent when
/// neither applies.
pub const METHOD_START: &str = "job.start";
/// Event: the job's command has ended; the body is an [`ExitStatus`].
pub const EVENT_EXIT: &str = "job.exit";

/// One unit on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Frame {
    /// The sender's protocol version.
    pub version: u32,
    /// What the frame says.
    #[serde(flatten)]
    pub message: Message,
}

/// The kinds of frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Message {
    /// First frame from the child.
    Hello {
        /// The child's pid as the child sees it (1 inside a new pid namespace).
        pid: i32,
    },
    /// A call from the server.
    Request {
        /// Echoed in the response.
        id: u64,
        /// What to do, e.g. [`METHOD_START`].
        method: String,
        /// The method's parameters.
        params: serde_json::Value,
    },
    /// The answer to the request with the same id.
    Response {
        /// The request's id.
        id: u64,
        /// The method's result, or why it failed.
        result: Result<serde_json::Value, InitError>,
    },
    /// Something that happened, such as [`EVENT_EXIT`].
    Event {
        /// The event's name.
        name: String,
        /// Its details.
        body: serde_json::Value,
    },
}

/// Which stage of a job's start failed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Preparing the job's environment (namespaces, mounts, privileges, work directory).
    Setup,
    /// Executing the command (not found, not executable, ...).
    Exec,
    /// The two sides did not understand each other.
    Protocol,
    /// A phase took longer than its deadline.
    Timeout,
}

/// A typed failure reported by the init process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InitError {
    /// Which stage failed.
    pub kind: ErrorKind,
    /// One sentence for the user: what failed, where and why.
    pub message: String,
    /// The step that failed, such as "chdir" or "pivot_root".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The errno, when the failure came from a system call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

impl InitError {
    /// A setup failure of `step` with the system error `errno`.
    pub fn setup(step: &str, errno: nix::errno::Errno, message: String) -> InitError {
        InitError {
            kind: ErrorKind::Setup,
            message,
            step: Some(step.into()),
            errno: Some(errno as i32),
        }
    }

    /// A protocol failure.
    pub fn protocol(message: impl Into<String>) -> InitError {
        InitError {
            kind: ErrorKind::Protocol,
            message: message.into(),
            step: None,
            errno: None,
        }
    }
}

/// The result of [`METHOD_START`]: the command is running.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Started {
    /// The command's pid inside the job's pid namespace.
    pub pid: i32,
}

/// How the job's command ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl Frame {
    /// A frame of the current version.
    pub fn new(message: Message) -> Frame {
        Frame {
            version: PROTOCOL_VERSION,
            message,
        }
    }

    /// The frame as bytes on the wire, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain types cannot fail.
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses a frame body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Frame, InitError> {
        serde_json::from_slice(body)
            .map_err(|e| InitError::protocol(format!("malformed init protocol frame: {e}")))
    }
}

/// Writes one frame to a blocking stream.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    w.write_all(&frame.encode())
}

/// Reads one frame from a blocking stream; `Ok(None)` on a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("init protocol frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Frame::decode(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_a_byte_stream() {
        let frames = vec![
            Frame::new(Message::Hello { pid: 1 }),
            Frame::new(Message::Request {
                id: 7,
                method: METHOD_START.into(),
                params: serde_json::json!({"a": 1}),
            }),
            Frame::new(Message::Response {
                id: 7,
                result: Err(InitError::setup(
                    "chdir",
                    nix::errno::Errno::ENOENT,
                    "no".into(),
                )),
            }),
            Frame::new(Message::Event {
                name: EVENT_EXIT.into(),
                body: serde_json::to_value(ExitStatus::Signal(9)).unwrap(),
            }),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            write_frame(&mut wire, f).unwrap();
        }
        let mut r = &wire[..];
        for f in &frames {
            assert_eq!(read_frame(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn an_oversized_frame_is_refused_without_allocating_it() {
        let wire = (u32::MAX).to_le_bytes();
        let err = read_frame(&mut &wire[..]).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"));
    }

    #[test]
    fn the_wire_form_names_version_kind_and_body() {
        let text = String::from_utf8(Frame::new(Message::Hello { pid: 1 }).encode()[4..].to_vec())
            .unwrap();
        assert_eq!(text, r#"{"version":1,"kind":"hello","body":{"pid":1}}"#);
    }
}
