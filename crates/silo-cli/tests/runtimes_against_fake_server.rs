//! `silo runtime …` against a fake runtime service over real mutual TLS: progress streams
//! end in a runtime or a clear error, archives travel whole, and exit statuses say whether
//! a runtime matches its manifest.

mod support;

use std::path::{Path, PathBuf};

use silo_cli::parse::{parse_exact_runtime_ref, parse_runtime_ref};
use silo_cli::{
    BuildArgs, ClientCommand, ExportArgs, GlobalOptions, InstallArgs, RemoveArgs, RuntimeArgs,
    RuntimeCommand, RuntimeInfoArgs, RuntimeListArgs, VerifyArgs, error_message,
};
use support::FakeServer;
use support::runtimes::EXPORTED;

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    server: FakeServer,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki(&dir.path().join("pki"));
    let server = support::start(&pki);
    let config = support::client_config(dir.path(), &server.address, &pki, &pki, None);
    Setup {
        dir,
        config,
        server,
    }
}

fn runtime(config: &Path, command: RuntimeCommand) -> anyhow::Result<i32> {
    silo_cli::run(ClientCommand::Runtime(RuntimeArgs {
        global: GlobalOptions {
            config: Some(config.to_path_buf()),
            server: None,
        },
        command,
    }))
}

fn build(setup: &Setup, spec: &str, replace: bool) -> anyhow::Result<i32> {
    let path = setup.dir.path().join("spec.yml");
    std::fs::write(&path, spec).unwrap();
    runtime(
        &setup.config,
        RuntimeCommand::Build(BuildArgs {
            spec: path,
            replace,
        }),
    )
}

#[test]
fn a_build_sends_the_spec_and_ends_with_the_runtime() {
    let setup = setup();
    assert_eq!(build(&setup, "name: python-3.11\n", true).unwrap(), 0);
    let calls = setup.server.calls.lock().unwrap();
    let sent = calls.builds.last().unwrap();
    assert_eq!(sent.spec_yaml, "name: python-3.11\n");
    assert!(sent.replace);
}

#[test]
fn a_failed_or_unfinished_build_is_one_sentence() {
    let setup = setup();
    let err = build(&setup, "bad", false).unwrap_err();
    assert_eq!(
        error_message(&err),
        "pip: no matching distribution found for numpy==0.0"
    );
    let err = build(&setup, "noresult", false).unwrap_err();
    assert_eq!(
        error_message(&err),
        "the server ended the build without a result"
    );
}

#[test]
fn an_install_streams_the_archive_in_mebibyte_chunks_with_replace_on_the_first() {
    let setup = setup();
    let archive = setup.dir.path().join("python.tar");
    std::fs::write(&archive, vec![1u8; (5 << 20) / 2]).unwrap();
    let install = |replace| {
        runtime(
            &setup.config,
            RuntimeCommand::Install(InstallArgs {
                archive: archive.clone(),
                replace,
            }),
        )
    };
    assert_eq!(install(true).unwrap(), 0);
    assert_eq!(install(false).unwrap(), 0);
    let calls = setup.server.calls.lock().unwrap();
    assert_eq!(
        calls.installs,
        [
            vec![(1 << 20, true), (1 << 20, false), (1 << 19, false)],
            vec![(1 << 20, false), (1 << 20, false), (1 << 19, false)],
        ]
    );
}

#[test]
fn an_install_the_server_refuses_reads_as_its_message() {
    let setup = setup();
    let archive = setup.dir.path().join("tiny.tar");
    std::fs::write(&archive, b"tiny").unwrap();
    let err = runtime(
        &setup.config,
        RuntimeCommand::Install(InstallArgs {
            archive,
            replace: false,
        }),
    )
    .unwrap_err();
    assert_eq!(
        error_message(&err),
        "archive: not a runtime archive (no manifest)"
    );
}

#[test]
fn an_export_writes_the_whole_archive_or_nothing() {
    let setup = setup();
    let output = setup.dir.path().join("python.tar");
    let export = |name: &str| {
        runtime(
            &setup.config,
            RuntimeCommand::Export(ExportArgs {
                runtime: parse_runtime_ref(name).unwrap(),
                output: output.clone(),
            }),
        )
    };
    assert_eq!(export("python-3.11").unwrap(), 0);
    assert_eq!(std::fs::read(&output).unwrap(), EXPORTED.concat());
    std::fs::remove_file(&output).unwrap();

    let err = export("broken").unwrap_err();
    assert_eq!(
        error_message(&err),
        "the server ended the export after 7 of 100 bytes"
    );
    let err = export("nosuch").unwrap_err();
    assert_eq!(
        error_message(&err),
        "runtime nosuch not found; installed: python-3.11@1.0.0"
    );
    let left: Vec<_> = std::fs::read_dir(setup.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().starts_with("python.tar"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn verify_exits_1_when_the_runtime_differs_from_its_manifest() {
    let setup = setup();
    let verify = |name: &str| {
        runtime(
            &setup.config,
            RuntimeCommand::Verify(VerifyArgs {
                runtime: parse_runtime_ref(name).unwrap(),
            }),
        )
    };
    assert_eq!(verify("python-3.11").unwrap(), 0);
    assert_eq!(verify("broken").unwrap(), 1);
}

#[test]
fn list_info_and_remove_show_the_servers_answers() {
    let setup = setup();
    let config = &setup.config;
    for json in [false, true] {
        assert_eq!(
            runtime(config, RuntimeCommand::List(RuntimeListArgs { json })).unwrap(),
            0
        );
        let info = RuntimeInfoArgs {
            runtime: parse_runtime_ref("python-3.11").unwrap(),
            json,
        };
        assert_eq!(runtime(config, RuntimeCommand::Info(info)).unwrap(), 0);
    }
    let remove = |name: &str| {
        runtime(
            config,
            RuntimeCommand::Remove(RemoveArgs {
                runtime: parse_exact_runtime_ref(name).unwrap(),
            }),
        )
    };
    assert_eq!(remove("python-3.11@1.0.0").unwrap(), 0);
    let err = remove("busy@1.0.0").unwrap_err();
    assert_eq!(
        error_message(&err),
        "runtime busy@1.0.0 is used by job 3f2a1b2c"
    );
}
