//! The init's side of the init protocol: hello, the optional prepare, the start request
//! and its answer, and the exit report at the end.

use std::fs::File;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::unistd::getpid;
use silo_log::LogWriter;

use super::launch::{join_cgroups, start};
use super::pid1::supervise;
use crate::isolation::{self};
use crate::protocol::{
    EVENT_EXIT, Frame, InitError, METHOD_PREPARE, METHOD_START, Message, PROTOCOL_VERSION, Started,
    read_frame, write_frame,
};
use crate::{InitSpec, Prepare, SandboxBase};

/// How long the init waits for the server's start request.
const START_DEADLINE: Duration = Duration::from_secs(10);

pub(super) struct Init {
    control: Option<UnixStream>,
    log_file: Option<File>,
}

impl Init {
    pub(super) fn new(control: UnixStream, log: File) -> io::Result<Init> {
        Ok(Init {
            control: Some(control),
            log_file: Some(log),
        })
    }

    fn send(&mut self, message: Message) {
        if let Some(c) = self.control.as_mut()
            && write_frame(c, &Frame::new(message)).is_err()
        {
            // The server is gone; the job goes on without it.
            self.control = None;
        }
    }

    pub(super) fn run(mut self) -> io::Result<()> {
        self.send(Message::Hello {
            pid: getpid().as_raw(),
        });
        let (id, spec, prepared) = self.receive_start()?;
        let log_file = self
            .log_file
            .take()
            .ok_or_else(|| io::Error::other("log taken"))?;
        let log = LogWriter::create(log_file, Path::new("<job log>"), spec.log_cap_bytes)
            .map_err(io::Error::other)?;
        let job = match start(&spec, prepared.as_ref()) {
            Ok(job) => job,
            Err(e) => {
                self.send(Message::Response { id, result: Err(e) });
                return Ok(());
            }
        };
        self.send(Message::Response {
            id,
            result: Ok(serde_json::to_value(Started {
                pid: job.child.as_raw(),
            })
            .unwrap_or_default()),
        });
        let status = supervise(job, log, self.control.as_mut());
        self.send(Message::Event {
            name: EVENT_EXIT.into(),
            body: serde_json::to_value(status).unwrap_or_default(),
        });
        Ok(())
    }

    /// Waits for the server's start request. The first request must come within a
    /// deadline; when it is a prepare request, the init builds the job-independent part of
    /// the sandbox and then waits for the start without one (a ready init in the server's
    /// pool). Returns the start request's id, the job, and what was prepared.
    fn receive_start(&mut self) -> io::Result<(u64, InitSpec, Option<SandboxBase>)> {
        let (id, method, params) = self.receive_request(Some(START_DEADLINE))?;
        if method != METHOD_PREPARE {
            let spec = self.parse_start(id, &method, params)?;
            return Ok((id, spec, None));
        }
        let Prepare {
            sandbox: base,
            cgroup_dirs,
        } = match serde_json::from_value(params) {
            Ok(prepare) => prepare,
            Err(e) => return Err(self.refuse(id, format!("malformed sandbox: {e}"))),
        };
        if let Err(e) = join_cgroups(&cgroup_dirs).and_then(|()| isolation::prepare(&base)) {
            let message = e.message.clone();
            self.send(Message::Response { id, result: Err(e) });
            return Err(io::Error::other(message));
        }
        self.send(Message::Response {
            id,
            result: Ok(serde_json::Value::Null),
        });
        let (id, method, params) = self.receive_request(None)?;
        let spec = self.parse_start(id, &method, params)?;
        Ok((id, spec, Some(base)))
    }

    /// The next request from the server, waiting at most `deadline`.
    fn receive_request(
        &mut self,
        deadline: Option<Duration>,
    ) -> io::Result<(u64, String, serde_json::Value)> {
        let control = self
            .control
            .as_mut()
            .ok_or_else(|| io::Error::other("no control socket"))?;
        control.set_read_timeout(deadline)?;
        let frame = read_frame(control)?
            .ok_or_else(|| io::Error::other("server closed the control socket before start"))?;
        control.set_read_timeout(None)?;
        if frame.version != PROTOCOL_VERSION {
            return Err(io::Error::other(format!(
                "server speaks init protocol {} but this init speaks {PROTOCOL_VERSION}",
                frame.version
            )));
        }
        match frame.message {
            Message::Request { id, method, params } => Ok((id, method, params)),
            other => Err(io::Error::other(format!(
                "expected a request, got {other:?}"
            ))),
        }
    }

    fn parse_start(
        &mut self,
        id: u64,
        method: &str,
        params: serde_json::Value,
    ) -> io::Result<InitSpec> {
        if method != METHOD_START {
            return Err(self.refuse(
                id,
                format!("expected a {METHOD_START} request, got {method}"),
            ));
        }
        serde_json::from_value::<InitSpec>(params)
            .map_err(|e| self.refuse(id, format!("malformed job spec: {e}")))
    }

    /// Answers request `id` with a protocol error and returns it for the init to exit with.
    fn refuse(&mut self, id: u64, message: String) -> io::Error {
        self.send(Message::Response {
            id,
            result: Err(InitError::protocol(message.clone())),
        });
        io::Error::other(message)
    }
}
