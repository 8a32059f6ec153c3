//! Descriptors: the command holds exactly stdin, stdout and stderr, so it cannot reach the
//! init's control socket or the job's log file on the host.

use silo_proto::v1::JobState;

use crate::common::*;

/// Lists the open descriptors above 2 and tries to write a forged exit report and a forged
/// log record through every descriptor number and through the init's /proc entries.
const PROBE: &str = r#"
import json, os, struct
open_fds = []
for fd in range(3, 4096):
    try:
        os.fstat(fd)
        open_fds.append(fd)
    except OSError:
        pass
print("open-above-2:", open_fds)
body = json.dumps({"version": 1, "kind": "event", "body": {"name": "job.exit", "body": {"code": 0}}}).encode()
frame = struct.pack("<I", len(body)) + body
record = struct.pack("<QqBI", 999999, 0, 1, 0xFFFFFFFF)
wrote = []
for fd in range(3, 4096):
    for data in (frame, record):
        try:
            os.write(fd, data)
            wrote.append(fd)
        except OSError:
            pass
print("wrote-through:", sorted(set(wrote)))
for path in ("/proc/1/fd/3", "/proc/1/fd/4"):
    try:
        with open(path, "wb") as f:
            f.write(frame)
        print("reopened:", path)
    except OSError as e:
        print("refused:", path, e.errno)
print("still-running-after-forgery")
"#;

#[tokio::test]
async fn the_command_holds_only_stdio_and_cannot_forge_its_exit_or_its_log() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    // Exit code 3 after the forgery attempts: a forged "exit 0" would make it COMPLETED.
    let script = format!("{PROBE}\nimport sys; sys.exit(3)\n");
    let (end, out, err) = sh(
        &mut c,
        &format!("python3 -c '{}'", script.replace('\'', "'\\''")),
    )
    .await;
    assert!(out.contains("open-above-2: []"), "{out}\n{err}");
    assert!(out.contains("wrote-through: []"), "{out}\n{err}");
    assert!(!out.contains("reopened:"), "{out}");
    assert!(out.contains("still-running-after-forgery"), "{out}");
    assert_eq!(end.state(), JobState::Failed, "{end:?}");
    assert_eq!(end.exit_code, Some(3), "{end:?}");
}

#[tokio::test]
async fn a_root_job_cannot_reach_the_inits_descriptors_or_its_session() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let mut s = spec(&[
        "sh",
        "-c",
        "ls /proc/1/fd >/dev/null 2>&1 && echo listed-init-fds; \
         echo init-session=$(cut -d' ' -f6 /proc/1/stat); \
         echo 19 > /proc/1/autogroup 2>/dev/null && echo reniced-autogroup; true",
    ]);
    s.uid = Some(0);
    let (end, out, _) = sh_spec(&mut c, s).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    assert!(!out.contains("listed-init-fds"), "{out}");
    assert!(!out.contains("reniced-autogroup"), "{out}");
    // The init leads its own session (inside the job's pid namespace a session led from
    // outside reads as 0), so its autogroup is not the server's.
    assert!(out.contains("init-session=1\n"), "{out}");
}
