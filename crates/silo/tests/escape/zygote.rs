//! The init zygote: the fork-server every init is cloned from. It holds nothing of the
//! server's but its socket, an init holds none of it, and launches go on when it dies.

use std::time::{Duration, Instant};

use silo_proto::v1::JobState;

use crate::common::*;

/// The server's children whose name is `comm`.
fn children_named(server: u32, comm: &str) -> Vec<u32> {
    children_of(server)
        .into_iter()
        .filter(|(_, name)| name == comm)
        .map(|(pid, _)| pid)
        .collect()
}

/// Waits (up to 10 s) for the server to have exactly one zygote, and returns its pid.
fn the_zygote(server: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let zygotes = children_named(server, "silo-zygote");
        if zygotes.len() == 1 {
            return zygotes[0];
        }
        assert!(
            Instant::now() < deadline,
            "the server has zygotes {zygotes:?}, not one"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The descriptor numbers `pid` holds, and what each points at.
fn descriptors(pid: u32) -> Vec<(u32, String)> {
    let mut fds: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((n, target.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

#[tokio::test]
async fn the_zygote_holds_only_its_socket_and_an_init_holds_none_of_it() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    // A first job makes sure the pool (cloned from the zygote) is being filled.
    let (end, _, _) = sh(&mut c, "true").await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    let zygote = the_zygote(server.pid());
    // While it serves a clone (the pool's refills), the zygote holds that request's
    // descriptors (the init's socket, its log, its cgroup) for a moment; between requests
    // it holds only its own. A descriptor it kept would be there at every look.
    let deadline = Instant::now() + Duration::from_secs(5);
    let fds = loop {
        let fds = descriptors(zygote);
        if fds.len() == 4 || Instant::now() > deadline {
            break fds;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let numbers: Vec<u32> = fds.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [0, 1, 2, 3], "{fds:?}");
    assert_eq!(fds[0].1, "/dev/null", "{fds:?}");
    assert!(fds[3].1.starts_with("socket:"), "{fds:?}");
    let environ = std::fs::read(format!("/proc/{zygote}/environ")).unwrap();
    let mut environ: Vec<&[u8]> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .collect();
    environ.sort();
    assert_eq!(
        environ,
        [&b"RUST_BACKTRACE=1"[..], &b"SILO_MODE=zygote"[..]],
        "the zygote's environment"
    );
    let zygote_socket = fds[3].1.clone();

    // Every ready init is the server's child (cloned with CLONE_PARENT) and holds its
    // control socket and its log, and nothing of the zygote's.
    let deadline = Instant::now() + Duration::from_secs(10);
    let inits = loop {
        let inits = children_named(server.pid(), "silo-init");
        if !inits.is_empty() || Instant::now() > deadline {
            break inits;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!inits.is_empty(), "no ready init is the server's child");
    for init in inits {
        let fds = descriptors(init);
        assert!(
            fds.iter().all(|(_, target)| *target != zygote_socket),
            "init {init} holds the zygote's socket: {fds:?}"
        );
        assert!(
            fds.iter().all(|(n, _)| *n <= 4 || fds.len() <= 12),
            "init {init}: {fds:?}"
        );
    }
}

#[tokio::test]
async fn launches_go_on_when_the_zygote_is_killed_and_a_new_one_takes_over() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--ready-inits", "0"]);
    let mut c = server.admin().await;
    let (end, _, _) = sh(&mut c, "true").await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    let first = the_zygote(server.pid());
    sigkill(first);
    for i in 0..3 {
        let (end, out, err) = sh(&mut c, &format!("echo run-{i}")).await;
        assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
        assert_eq!(out, format!("run-{i}\n"));
    }
    let second = the_zygote(server.pid());
    assert_ne!(
        first, second,
        "the killed zygote is still the server's zygote"
    );
}

#[tokio::test]
async fn without_the_zygote_every_init_re_executes_the_binary() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--no-init-zygote"]);
    let mut c = server.admin().await;
    for _ in 0..3 {
        let (end, out, _) = sh(&mut c, "echo fine").await;
        assert_eq!(end.state(), JobState::Completed, "{end:?}");
        assert_eq!(out, "fine\n");
    }
    assert!(children_named(server.pid(), "silo-zygote").is_empty());
}

/// Whether `pid` has exited (gone, or a zombie waiting for its new parent).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

#[tokio::test]
async fn the_zygote_ends_with_a_crashed_server_and_the_next_server_starts_its_own() {
    if !privileged() {
        return;
    }
    let mut server = TestServer::start();
    let mut c = server.admin().await;
    let (end, _, _) = sh(&mut c, "true").await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    let old = the_zygote(server.pid());
    server.crash_and_restart_after(Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !exited(old) {
        assert!(
            Instant::now() < deadline,
            "the zygote {old} outlived its server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = server.admin().await;
    let (end, out, _) = sh(&mut c, "echo after").await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    assert_eq!(out, "after\n");
    assert_ne!(the_zygote(server.pid()), old);
}
