//! The server's end of one init's control socket.
//!
//! Everything the server says to a job's init and hears from it passes through an
//! [`InitConnection`]: the hello and its version check, calls (a request and the response
//! with its id, within a deadline) and the events the init reports on its own. Frames are
//! read with the server's cap, [`MAX_INIT_FRAME`]: an init is never believed about the size
//! of what it sends, and a frame that claims more is refused before its body is read.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use serde::Serialize;
use silo_sandbox::protocol::{
    ErrorKind, Frame, InitError, MAX_INIT_FRAME, METHOD_PREPARE, METHOD_START, Message,
    PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Events an init may send while a call waits for its answer; they are kept for
/// [`InitConnection::next_event`]. Silo's own init sends none then.
const MAX_PENDING_EVENTS: usize = 16;

/// The server's end of an init's control socket.
///
/// After any error the two sides are no longer in step (a deadline may have cut a frame in
/// half): the caller ends the init rather than use the connection again.
pub struct InitConnection {
    stream: UnixStream,
    /// The id of the last request sent; each call takes the next one.
    last_id: u64,
    /// Events that arrived while a call waited for its answer, oldest first.
    pending: VecDeque<(String, serde_json::Value)>,
}

impl InitConnection {
    /// The connection over `stream`, a control socket nothing has been said on yet.
    pub fn new(stream: UnixStream) -> InitConnection {
        InitConnection {
            stream,
            last_id: 0,
            pending: VecDeque::new(),
        }
    }

    /// The connection over a blocking control socket, as [`silo_sandbox::spawn`] makes it.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> std::io::Result<InitConnection> {
        stream.set_nonblocking(true)?;
        Ok(InitConnection::new(UnixStream::from_std(stream)?))
    }

    /// Waits at most `deadline` for the init's hello, and refuses an init that speaks
    /// another version of the protocol or says anything else first.
    pub async fn hello(&mut self, deadline: Duration) -> Result<(), InitError> {
        let frame = tokio::time::timeout(deadline, self.read_frame())
            .await
            .map_err(|_| {
                timeout_error(format!(
                    "the job's init did not say hello within {}",
                    humantime::format_duration(deadline)
                ))
            })??
            .ok_or_else(|| InitError::protocol("the job's init exited before saying hello"))?;
        match frame.message {
            Message::Hello { .. } if frame.version == PROTOCOL_VERSION => Ok(()),
            Message::Hello { .. } => Err(InitError::protocol(format!(
                "the job's init speaks protocol {}; this server speaks {PROTOCOL_VERSION}",
                frame.version
            ))),
            other => Err(InitError::protocol(format!(
                "the job's init sent a {} frame instead of its hello",
                kind_of(&other)
            ))),
        }
    }

    /// Asks the init to do `method` with `params`, and waits at most `deadline` (for the
    /// sending and the answer together) for the response to this request. The init's own
    /// error is returned as it sent it; the connection's failures are protocol errors, and
    /// a missed deadline a timeout error.
    pub async fn call(
        &mut self,
        method: &str,
        params: impl Serialize,
        deadline: Duration,
    ) -> Result<serde_json::Value, InitError> {
        self.call_with(method, params, &[], deadline).await
    }

    /// [`InitConnection::call`], and right after the request `fds` (when there are any),
    /// as `SCM_RIGHTS` on one byte (see [`silo_sandbox::protocol::METHOD_START`]).
    pub async fn call_with(
        &mut self,
        method: &str,
        params: impl Serialize,
        fds: &[BorrowedFd<'_>],
        deadline: Duration,
    ) -> Result<serde_json::Value, InitError> {
        let params = serde_json::to_value(params)
            .map_err(|e| InitError::protocol(format!("cannot encode the {method} request: {e}")))?;
        self.last_id += 1;
        let id = self.last_id;
        let request = Frame::new(Message::Request {
            id,
            method: method.into(),
            params,
        });
        let exchange = async {
            self.stream
                .write_all(&request.encode())
                .await
                .map_err(|e| {
                    InitError::protocol(format!("cannot send {method} to the job's init: {e}"))
                })?;
            if !fds.is_empty() {
                self.send_fds(fds).await.map_err(|e| {
                    InitError::protocol(format!(
                        "cannot send a descriptor with {method} to the job's init: {e}"
                    ))
                })?;
            }
            self.response(id, method).await
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| {
                timeout_error(format!(
                    "the job's init did not {} within {}",
                    asked_to(method),
                    humantime::format_duration(deadline)
                ))
            })?
    }

    /// Sends one byte carrying `fds` as `SCM_RIGHTS`.
    async fn send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let raw: Vec<_> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        loop {
            self.stream.writable().await?;
            let sent = self.stream.try_io(tokio::io::Interest::WRITABLE, || {
                sendmsg::<()>(
                    self.stream.as_raw_fd(),
                    &[std::io::IoSlice::new(&[0])],
                    &[ControlMessage::ScmRights(&raw)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            });
            match sent {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next event the init reports: its name and body, or `None` once the init has
    /// closed its socket. Frames other than events are passed over.
    pub async fn next_event(&mut self) -> Result<Option<(String, serde_json::Value)>, InitError> {
        if let Some(event) = self.pending.pop_front() {
            return Ok(Some(event));
        }
        while let Some(frame) = self.read_frame().await? {
            if let Message::Event { name, body } = frame.message {
                return Ok(Some((name, body)));
            }
        }
        Ok(None)
    }

    /// Reads frames until the response to request `id`, keeping events for later.
    async fn response(&mut self, id: u64, method: &str) -> Result<serde_json::Value, InitError> {
        loop {
            let Some(frame) = self.read_frame().await? else {
                return Err(InitError::protocol(format!(
                    "the job's init exited before answering {method}"
                )));
            };
            match frame.message {
                Message::Response {
                    id: answered,
                    result,
                } if answered == id => return result,
                Message::Response { id: answered, .. } => {
                    return Err(InitError::protocol(format!(
                        "the job's init answered request {answered}, but {id} ({method}) was asked"
                    )));
                }
                Message::Event { name, body } if self.pending.len() < MAX_PENDING_EVENTS => {
                    self.pending.push_back((name, body));
                }
                Message::Event { .. } => {
                    return Err(InitError::protocol(format!(
                        "the job's init sent more than {MAX_PENDING_EVENTS} events before answering {method}"
                    )));
                }
                other => {
                    return Err(InitError::protocol(format!(
                        "the job's init sent a {} frame instead of answering {method}",
                        kind_of(&other)
                    )));
                }
            }
        }
    }

    /// The next frame, or `None` when the init has closed its socket between frames.
    async fn read_frame(&mut self) -> Result<Option<Frame>, InitError> {
        let mut prefix = [0u8; 4];
        let mut got = 0;
        while got < prefix.len() {
            match self.stream.read(&mut prefix[got..]).await {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(cut_short()),
                Ok(n) => got += n,
                // A reset between frames is a close (the init ended with unread data).
                Err(e) if got == 0 && e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok(None);
                }
                Err(e) => {
                    return Err(InitError::protocol(format!(
                        "cannot read from the job's init: {e}"
                    )));
                }
            }
        }
        let len = u32::from_le_bytes(prefix) as usize;
        if len > MAX_INIT_FRAME {
            return Err(InitError::protocol(format!(
                "the job's init sent a frame of {len} bytes (the limit is {MAX_INIT_FRAME})"
            )));
        }
        let mut body = vec![0u8; len];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|_| cut_short())?;
        Frame::decode(&body).map(Some)
    }
}

fn cut_short() -> InitError {
    InitError::protocol("the job's init closed its control socket in the middle of a frame")
}

fn timeout_error(message: String) -> InitError {
    InitError {
        kind: ErrorKind::Timeout,
        message,
        step: None,
        errno: None,
    }
}

/// What the init is asked to do with `method`, for the sentence of a missed deadline.
fn asked_to(method: &str) -> String {
    match method {
        METHOD_PREPARE => "prepare its sandbox".into(),
        METHOD_START => "start the command".into(),
        other => format!("answer {other}"),
    }
}

/// The kind of a frame, as the wire names it.
fn kind_of(message: &Message) -> &'static str {
    match message {
        Message::Hello { .. } => "hello",
        Message::Request { .. } => "request",
        Message::Response { .. } => "response",
        Message::Event { .. } => "event",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream as StdUnixStream;

    use serde_json::json;
    use silo_sandbox::protocol::{EVENT_EXIT, read_frame, write_frame};

    use super::*;

    /// A fake init on a thread of its own, running `script` on its end of the socket; the
    /// socket closes when the script returns.
    fn fake_init(script: impl FnOnce(&mut StdUnixStream) + Send + 'static) -> InitConnection {
        let (server, mut init) = StdUnixStream::pair().unwrap();
        std::thread::spawn(move || script(&mut init));
        InitConnection::from_std(server).unwrap()
    }

    fn send(init: &mut StdUnixStream, message: Message) {
        write_frame(init, &Frame::new(message)).unwrap();
    }

    /// Reads the server's next request: its id, method and parameters.
    fn request(init: &mut StdUnixStream) -> (u64, String, serde_json::Value) {
        match read_frame(init).unwrap().unwrap().message {
            Message::Request { id, method, params } => (id, method, params),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    /// Waits until the server closes its end.
    fn until_closed(init: &mut StdUnixStream) {
        while let Ok(Some(_)) = read_frame(init) {}
    }

    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_hello_of_this_protocol_version_is_accepted() {
        let mut conn = fake_init(|init| send(init, Message::Hello { pid: 1 }));
        conn.hello(LONG).await.unwrap();
    }

    #[tokio::test]
    async fn a_hello_of_another_protocol_version_is_refused() {
        let mut conn = fake_init(|init| {
            let hello = Frame {
                version: PROTOCOL_VERSION + 1,
                message: Message::Hello { pid: 1 },
            };
            write_frame(init, &hello).unwrap();
        });
        let err = conn.hello(LONG).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol);
        assert_eq!(
            err.message,
            format!(
                "the job's init speaks protocol {}; this server speaks {PROTOCOL_VERSION}",
                PROTOCOL_VERSION + 1
            )
        );
    }

    #[tokio::test]
    async fn an_init_must_say_hello_first_and_in_time() {
        let mut conn = fake_init(|init| {
            send(
                init,
                Message::Event {
                    name: EVENT_EXIT.into(),
                    body: json!({"code": 0}),
                },
            )
        });
        let err = conn.hello(LONG).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol);
        assert!(err.message.contains("event frame instead of its hello"));

        let mut silent = fake_init(until_closed);
        let err = silent.hello(Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(err.message, "the job's init did not say hello within 50ms");

        let mut gone = fake_init(|_| {});
        let err = gone.hello(LONG).await.unwrap_err();
        assert_eq!(
            (err.kind, err.message.as_str()),
            (
                ErrorKind::Protocol,
                "the job's init exited before saying hello"
            )
        );
    }

    #[tokio::test]
    async fn each_call_gets_the_answer_to_its_own_fresh_id() {
        let mut conn = fake_init(|init| {
            for expected in 1..=2 {
                let (id, method, params) = request(init);
                assert_eq!((id, method.as_str()), (expected, "echo"));
                send(
                    init,
                    Message::Response {
                        id,
                        result: Ok(json!({"echo": params, "id": id})),
                    },
                );
            }
        });
        let first = conn.call("echo", json!([1]), LONG).await.unwrap();
        assert_eq!(first, json!({"echo": [1], "id": 1}));
        let second = conn.call("echo", "two", LONG).await.unwrap();
        assert_eq!(second, json!({"echo": "two", "id": 2}));
    }

    #[tokio::test]
    async fn the_inits_error_answer_comes_back_typed() {
        let refusal = InitError::setup(
            "chdir",
            nix::errno::Errno::ENOENT,
            "working directory /x does not exist".into(),
        );
        let sent = refusal.clone();
        let mut conn = fake_init(move |init| {
            let (id, ..) = request(init);
            send(
                init,
                Message::Response {
                    id,
                    result: Err(sent),
                },
            );
        });
        let err = conn.call(METHOD_START, json!({}), LONG).await.unwrap_err();
        assert_eq!(err, refusal);
    }

    #[tokio::test]
    async fn a_call_unanswered_within_its_deadline_times_out() {
        let mut conn = fake_init(|init| {
            request(init);
            until_closed(init);
        });
        let err = conn
            .call(METHOD_PREPARE, json!({}), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(
            err.message,
            "the job's init did not prepare its sandbox within 50ms"
        );
    }

    #[tokio::test]
    async fn an_init_that_closes_or_answers_another_request_breaks_the_call() {
        let mut gone = fake_init(|init| {
            request(init);
        });
        let err = gone.call(METHOD_START, json!({}), LONG).await.unwrap_err();
        assert_eq!(
            (err.kind, err.message.as_str()),
            (
                ErrorKind::Protocol,
                "the job's init exited before answering job.start"
            )
        );

        let mut confused = fake_init(|init| {
            let (id, ..) = request(init);
            send(
                init,
                Message::Response {
                    id: id + 1,
                    result: Ok(json!(null)),
                },
            );
        });
        let err = confused.call("echo", json!({}), LONG).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol);
        assert!(
            err.message.contains("answered request 2"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn events_sent_before_an_answer_are_kept_in_order() {
        let mut conn = fake_init(|init| {
            let (id, ..) = request(init);
            for n in 0..2 {
                send(
                    init,
                    Message::Event {
                        name: format!("early.{n}"),
                        body: json!(n),
                    },
                );
            }
            send(
                init,
                Message::Response {
                    id,
                    result: Ok(json!(null)),
                },
            );
        });
        conn.call("echo", json!({}), LONG).await.unwrap();
        assert_eq!(
            conn.next_event().await.unwrap(),
            Some(("early.0".into(), json!(0)))
        );
        assert_eq!(
            conn.next_event().await.unwrap(),
            Some(("early.1".into(), json!(1)))
        );
        assert_eq!(conn.next_event().await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_exit_event_is_read_and_a_close_after_it_is_the_end() {
        let mut conn = fake_init(|init| {
            send(init, Message::Hello { pid: 1 });
            send(
                init,
                Message::Event {
                    name: EVENT_EXIT.into(),
                    body: json!({"code": 3}),
                },
            );
        });
        let event = conn.next_event().await.unwrap();
        assert_eq!(event, Some((EVENT_EXIT.into(), json!({"code": 3}))));
        assert_eq!(conn.next_event().await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_init_that_closes_without_a_report_ends_the_events() {
        let mut conn = fake_init(|_| {});
        assert_eq!(conn.next_event().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_malformed_frame_is_a_protocol_error() {
        let mut conn = fake_init(|init| {
            let mut garbage = 5u32.to_le_bytes().to_vec();
            garbage.extend(b"{oops");
            init.write_all(&garbage).unwrap();
        });
        let err = conn.next_event().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol);
        assert!(err.message.starts_with("malformed init protocol frame"));
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_a_protocol_error() {
        let mut conn = fake_init(|init| {
            let mut wire = Frame::new(Message::Hello { pid: 1 }).encode();
            wire.truncate(10);
            init.write_all(&wire).unwrap();
        });
        let err = conn.next_event().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol);
        assert!(err.message.contains("in the middle of a frame"));
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_its_body_is_read() {
        for claimed in [MAX_INIT_FRAME as u32 + 1, u32::MAX] {
            // The fake sends only the length and keeps its end open: a reader that waited
            // for the body (or allocated it) would hang here.
            let mut conn = fake_init(move |init| {
                init.write_all(&claimed.to_le_bytes()).unwrap();
                until_closed(init);
            });
            let err = tokio::time::timeout(LONG, conn.next_event())
                .await
                .expect("the reader waited for the body")
                .unwrap_err();
            assert_eq!(err.kind, ErrorKind::Protocol);
            assert_eq!(
                err.message,
                format!(
                    "the job's init sent a frame of {claimed} bytes (the limit is {MAX_INIT_FRAME})"
                )
            );
        }
    }
}
