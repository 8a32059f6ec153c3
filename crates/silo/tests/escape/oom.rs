//! The OOM killer's choice when the host runs out of memory: a job's processes before the
//! server, its inits and the host's own.

use silo_proto::v1::JobState;

use crate::common::*;

/// `CAP_SYS_RESOURCE`'s bit in a capability set.
const CAP_SYS_RESOURCE: u32 = 24;

fn oom_score_adj(pid: &str) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_jobs_processes_are_first_in_line_for_the_oom_killer() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let (end, out, err) = sh(
        &mut c,
        "cat /proc/self/oom_score_adj; sh -c 'cat /proc/self/oom_score_adj'; \
         cat /proc/1/oom_score_adj; echo 0 > /proc/self/oom_score_adj 2>/dev/null; \
         cat /proc/self/oom_score_adj",
    )
    .await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    let values: Vec<i32> = out.lines().map(|l| l.parse().unwrap()).collect();
    let server_adj = oom_score_adj(&server.pid().to_string());
    // The command and its children start at 500; the init (the job's PID 1) keeps the
    // server's value.
    assert_eq!(values[..3], [500, 500, server_adj], "{out}");
    let has_sys_resource = {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap();
        u64::from_str_radix(eff.trim(), 16).unwrap() & (1 << CAP_SYS_RESOURCE) != 0
    };
    if has_sys_resource {
        // The server lowered itself, and the job's 500 is a floor it cannot go under.
        assert_eq!(server_adj, -500);
        assert_eq!(values[3], 500, "the job lowered its oom_score_adj: {out}");
    } else {
        // Only a writer with CAP_SYS_RESOURCE lowers a score or sets a floor.
        assert_eq!(server_adj, 0);
        eprintln!(
            "NOTE: root here lacks CAP_SYS_RESOURCE: the server keeps oom_score_adj 0 and a \
             job may lower its 500 back to 0 (checked: {})",
            values[3]
        );
    }
}
