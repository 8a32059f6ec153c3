//! The init's side of the init protocol: hello, the optional prepare, the start request
//! and its answer, and the exit report at the end.

use std::fs::File;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::unistd::getpid;
use silo_log::LogWriter;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::launch::{Preforked, join_cgroups, prefork, start, start_preforked};
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
    /// The job's log, its header already written (before the start request, which has
    /// only the cap to add).
    log: Option<LogWriter>,
    /// The command's process, forked at prepare when the server said which job comes.
    preforked: Option<Preforked>,
    /// The buffer the command's output is read through: allocated before the job comes,
    /// and freed after its exit is reported, not on the way to the report.
    buf: Vec<u8>,
}

impl Init {
    pub(super) fn new(control: UnixStream, log: File) -> io::Result<Init> {
        let mut log =
            LogWriter::create(log, Path::new("<job log>"), u64::MAX).map_err(io::Error::other)?;
        // The room the job's end needs (its two output pipes, full, and the exit record),
        // kept ahead now, before any job comes: see `pid1::supervise`. A filesystem without
        // room now is tried again there.
        let _ = log.reserve(super::pid1::end_headroom_of(&[
            super::launch::PIPE_SIZE as usize,
            super::launch::PIPE_SIZE as usize,
        ]));
        Ok(Init {
            control: Some(control),
            log: Some(log),
            preforked: None,
            buf: vec![0u8; super::pid1::READ_CHUNK],
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
        let mut log = self
            .log
            .take()
            .ok_or_else(|| io::Error::other("log taken"))?;
        log.set_cap(spec.log_cap_bytes);
        // The mounts that come with the start (see METHOD_START).
        let preforked = self.preforked.take();
        let iso = spec.isolation.as_ref();
        let disk_comes = iso.is_some_and(|i| i.work_disk);
        let shared_comes = preforked.is_some() && iso.is_some_and(|i| i.shared_dir.is_some());
        let mut mounts = if disk_comes || shared_comes {
            self.receive_descriptors().into_iter()
        } else {
            Vec::new().into_iter()
        };
        let disk = if disk_comes { mounts.next() } else { None };
        let shared = if shared_comes { mounts.next() } else { None };
        let started = match preforked {
            Some(pre) => start_preforked(&spec, pre, disk, shared),
            None => start(&spec, prepared.as_ref(), disk),
        };
        let job = match started {
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
        let status = supervise(job, &mut log, self.control.as_mut(), &mut self.buf);
        self.send(Message::Event {
            name: EVENT_EXIT.into(),
            body: serde_json::to_value(status).unwrap_or_default(),
        });
        // The end is told. What is left, this process's exit (the job's mounts and
        // namespaces torn down, a few hundred microseconds of kernel work), waits for idle
        // CPU: the server is now reading the job's usage and telling its clients the end,
        // on the same CPUs, and a thread of it preempted by this exit while holding a lock
        // delays the client's answer by as much.
        let idle = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler on this process with a parameter we own.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) };
        #[cfg(debug_assertions)]
        if let Some(ms) = std::env::var(super::LINGER_ENV)
            .ok()
            .and_then(|ms| ms.parse().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        // So does giving back the log's room kept ahead (a truncate; the server does it too
        // for an init killed before this).
        log.release_reserve();
        drop(log);
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
            job,
        } = match serde_json::from_value(params) {
            Ok(prepare) => prepare,
            Err(e) => return Err(self.refuse(id, format!("malformed sandbox: {e}"))),
        };
        if let Some(job) = &job
            && (job.base() != base || job.shared_dir.is_some())
        {
            return Err(self.refuse(
                id,
                "the prepared job's sandbox differs from the sandbox to prepare, or has a \
                 shared directory"
                    .into(),
            ));
        }
        let prepared = join_cgroups(&cgroup_dirs)
            .and_then(|()| isolation::prepare(&base))
            .and_then(|()| match &job {
                // The job's half too, and its command's process up to the exec.
                Some(job) => isolation::finish(job).and_then(|()| prefork(job)).map(Some),
                None => Ok(None),
            });
        let prepared = match prepared {
            Ok(preforked) => {
                self.preforked = preforked;
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = prepared {
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

    /// The descriptors the server sends right after a start request (the detached mounts
    /// of the job's disk and shared directory, see METHOD_START), in the order sent; none
    /// if none arrive in time, which the start then reports.
    fn receive_descriptors(&mut self) -> Vec<OwnedFd> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        let Some(control) = self.control.as_mut() else {
            return Vec::new();
        };
        if control.set_read_timeout(Some(START_DEADLINE)).is_err() {
            return Vec::new();
        }
        let mut byte = [0u8; 1];
        let mut iov = [io::IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
        let received = recvmsg::<()>(
            control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let _ = control.set_read_timeout(None);
        let mut fds: Vec<OwnedFd> = Vec::new();
        let Ok(received) = received else {
            return fds;
        };
        let Ok(messages) = received.cmsgs() else {
            return fds;
        };
        for message in messages {
            if let ControlMessageOwned::ScmRights(raw) = message {
                // SAFETY: the kernel installed these descriptors in this process for this
                // message; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        fds
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
