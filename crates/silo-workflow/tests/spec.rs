//! The workflow YAML: what a workflow file may say, what it means, and how each mistake is
//! refused before anything runs.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use silo_workflow::spec::{
    Condition, JobSpec, Location, Requirement, Resources, Retry, SpecError, WorkflowSpec,
};

const EXAMPLE: &str = r#"name: ml-pipeline
jobs:
  fetch:
    command: python3
    args: [fetch.py]
    runtime: python-3.11-ml
    uploads: {files: [fetch.py]}           # paths relative to the workflow file's directory
    environment: {DATASET: iris}
    resources: {max_cpu: 100, max_memory: 512, max_io_bps: 0, cpu_cores: "0"}   # max_memory in MB (MiB), max_cpu percent of one core, max_io_bps bytes/s (0 = none), cpu_cores a cpu list "0-3,5"
  train:
    command: python3
    args: [train.py]
    requires:
      - fetch: COMPLETED
  report:
    command: sh
    args: [-c, "ls /shared"]
    requires:
      - train: FINISHED        # any end: completed, failed, stopped, skipped
"#;

fn message(yaml: &str) -> String {
    match WorkflowSpec::parse(yaml) {
        Ok(spec) => panic!("accepted: {spec:?}"),
        Err(error) => error.to_string(),
    }
}

fn plain_job(name: &str, command: &str, args: &[&str], requires: Vec<Requirement>) -> JobSpec {
    JobSpec {
        name: name.into(),
        command: command.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        runtime: None,
        uploads: vec![],
        env: vec![],
        secret_env: vec![],
        resources: Resources::default(),
        requires,
        retry: Retry::default(),
        timeout: None,
        continue_on_failure: false,
        workdir: None,
        network_host: false,
    }
}

#[test]
fn the_example_from_the_other_system_parses_exactly() {
    let spec = WorkflowSpec::parse(EXAMPLE).unwrap();
    let fetch = JobSpec {
        runtime: Some("python-3.11-ml".into()),
        uploads: vec!["fetch.py".into()],
        env: vec![("DATASET".into(), "iris".into())],
        resources: Resources {
            cpu_percent: Some(100),
            memory_bytes: Some(512 << 20),
            io_bps: None,
            cpus: Some("0".into()),
            pids: None,
            disk_bytes: None,
        },
        ..plain_job("fetch", "python3", &["fetch.py"], vec![])
    };
    let train = plain_job(
        "train",
        "python3",
        &["train.py"],
        vec![Requirement {
            job: 0,
            condition: Condition::Completed,
        }],
    );
    let report = plain_job(
        "report",
        "sh",
        &["-c", "ls /shared"],
        vec![Requirement {
            job: 1,
            condition: Condition::Finished,
        }],
    );
    let expected = WorkflowSpec {
        name: "ml-pipeline".into(),
        jobs: vec![fetch, train, report],
        max_parallel: None,
        timeout: None,
        fail_fast: false,
    };
    assert_eq!(spec, expected);
    assert_eq!(spec.job("train"), Some(1));
    assert_eq!(spec.job("nope"), None);
}

#[test]
fn silos_own_keys_are_read() {
    let yaml = r#"
name: nightly
max_parallel: 50
timeout: 1h
fail_fast: true
jobs:
  build:
    command: make
    retry: {limit: 3, backoff: 500ms, max_backoff: 1m}
    timeout: 10m
    continue_on_failure: true
    secret_environment: {TOKEN: hunter2}
    workdir: /src
    network: host
    pids: 256
    disk: 10G
    resources: {max_io_bps: 1048576, cpu_cores: "0-3,5"}
  test:
    command: make
    args: [test]
    needs: [build]
    requires:
      - build: finished
"#;
    let error = message(yaml);
    assert_eq!(
        error,
        "line 21, column 13: job `test` names `build` more than once in `requires` and `needs`"
    );

    let yaml = yaml.replace("      - build: finished\n", "      - lint: SKIPPED\n")
        + "  lint:\n    command: lint\n";
    let spec = WorkflowSpec::parse(&yaml).unwrap();
    assert_eq!(spec.max_parallel, Some(50));
    assert_eq!(spec.timeout, Some(Duration::from_secs(3600)));
    assert!(spec.fail_fast);
    let build = &spec.jobs[0];
    assert_eq!(
        build.retry,
        Retry {
            limit: 3,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60)
        }
    );
    assert_eq!(build.timeout, Some(Duration::from_secs(600)));
    assert!(build.continue_on_failure);
    assert_eq!(
        build.secret_env,
        [("TOKEN".to_owned(), "hunter2".to_owned())]
    );
    assert!(build.env.is_empty());
    assert_eq!(build.workdir.as_deref(), Some("/src"));
    assert!(build.network_host);
    assert_eq!(
        build.resources,
        Resources {
            cpu_percent: None,
            memory_bytes: None,
            io_bps: Some(1 << 20),
            cpus: Some("0-3,5".into()),
            pids: Some(256),
            disk_bytes: Some(10 << 30),
        }
    );
    assert_eq!(
        spec.jobs[1].requires,
        [
            Requirement {
                job: 2,
                condition: Condition::Skipped
            },
            Requirement {
                job: 0,
                condition: Condition::Completed
            },
        ]
    );
    assert!(!spec.jobs[1].network_host);
}

#[test]
fn defaults_are_inherited_and_a_jobs_own_value_wins() {
    let yaml = r#"
name: inherit
defaults:
  command: python3
  runtime: python-3.11
  environment: {A: from-defaults, B: from-defaults}
  resources: {max_memory: 256, max_cpu: 50}
  retry: {limit: 2, backoff: 2s}
  timeout: 5m
jobs:
  plain: {}
  own:
    command: sh
    environment: {B: own, C: own}
    resources: {max_memory: 1024}
    retry: {limit: 0}
    timeout: 1m
  empty:
"#;
    let spec = WorkflowSpec::parse(yaml).unwrap();
    let [plain, own, empty] = spec.jobs.as_slice() else {
        panic!("{spec:?}")
    };
    assert_eq!(plain.command, "python3");
    assert_eq!(plain.runtime.as_deref(), Some("python-3.11"));
    assert_eq!(
        plain.env,
        [
            ("A".to_owned(), "from-defaults".to_owned()),
            ("B".to_owned(), "from-defaults".to_owned())
        ]
    );
    assert_eq!(plain.resources.memory_bytes, Some(256 << 20));
    assert_eq!(plain.resources.cpu_percent, Some(50));
    assert_eq!(plain.retry.limit, 2);
    assert_eq!(plain.retry.backoff, Duration::from_secs(2));
    assert_eq!(plain.timeout, Some(Duration::from_secs(300)));
    assert_eq!(
        empty,
        &JobSpec {
            name: "empty".into(),
            ..plain.clone()
        }
    );

    assert_eq!(own.command, "sh");
    assert_eq!(
        own.env,
        [
            ("A".to_owned(), "from-defaults".to_owned()),
            ("B".to_owned(), "own".to_owned()),
            ("C".to_owned(), "own".to_owned())
        ]
    );
    assert_eq!(own.resources.memory_bytes, Some(1024 << 20));
    assert_eq!(
        own.resources.cpu_percent,
        Some(50),
        "resources merge key by key"
    );
    assert_eq!(own.retry.limit, 0);
    assert_eq!(
        own.retry.backoff,
        Duration::from_secs(2),
        "retry merges key by key"
    );
    assert_eq!(own.timeout, Some(Duration::from_secs(60)));
}

#[test]
fn secret_values_never_appear_in_debug_output() {
    let yaml = "name: s\njobs:\n  a:\n    command: env\n    environment: {PLAIN: visible}\n    secret_environment: {TOKEN: hunter2, KEY: s3cr3t}\n";
    let spec = WorkflowSpec::parse(yaml).unwrap();
    assert_eq!(spec.jobs[0].secret_env.len(), 2);
    for shown in [format!("{spec:?}"), format!("{spec:#?}")] {
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(shown.contains("TOKEN") && shown.contains("KEY") && shown.contains("visible"));
    }
}

#[test]
fn a_secret_value_is_never_put_into_an_error() {
    let yaml =
        "name: s\njobs:\n  a:\n    command: env\n    secret_environment: {TOKEN: \"hunter2\\0\"}\n";
    let error = message(yaml);
    assert!(!error.contains("hunter2"), "{error}");
    assert!(error.contains("TOKEN"), "{error}");
}

#[test]
fn every_refusal_names_its_place_and_reason() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown key in a job",
            "name: w\njobs:\n  a: {command: x, comand: y}\n",
            "line 3, column 19: unknown key `comand`, expected one of command, args, runtime, uploads, environment, secret_environment, resources, retry, timeout, continue_on_failure, workdir, network, pids, disk, requires, needs",
        ),
        (
            "unknown key at the top",
            "name: w\nparallel: 3\njobs:\n  a: {command: x}\n",
            "line 2, column 1: unknown key `parallel`, expected one of name, jobs, max_parallel, timeout, fail_fast, defaults",
        ),
        (
            "unknown key in resources",
            "name: w\njobs:\n  a:\n    command: x\n    resources: {memory: 5}\n",
            "line 5, column 17: unknown key `memory`, expected one of max_cpu, max_memory, max_io_bps, cpu_cores",
        ),
        (
            "unknown job in requires",
            "name: w\njobs:\n  train:\n    command: x\n    requires:\n      - fecth: COMPLETED\n",
            "line 6, column 9: job `train` requires `fecth`, which is not a job in this workflow",
        ),
        (
            "unknown job in needs",
            "name: w\njobs:\n  train: {command: x, needs: [fetch]}\n",
            "line 3, column 31: job `train` requires `fetch`, which is not a job in this workflow",
        ),
        (
            "duplicate job",
            "name: w\njobs:\n  a: {command: x}\n  b: {command: x}\n  a: {command: y}\n",
            "line 5, column 3: job `a` appears twice (first at line 3, column 3)",
        ),
        (
            "duplicate key in a job",
            "name: w\njobs:\n  a:\n    command: x\n    command: y\n",
            "line 5, column 5: duplicate key `command` (first at line 4, column 5)",
        ),
        (
            "duplicate environment variable",
            "name: w\njobs:\n  a:\n    command: x\n    environment:\n      A: 1\n      A: 2\n",
            "line 7, column 7: `A` appears twice in jobs.a.environment (first at line 6, column 7)",
        ),
        (
            "cycle",
            "name: w\njobs:\n  c: {command: x, needs: [b]}\n  a: {command: x, needs: [c]}\n  b: {command: x, needs: [a]}\n",
            "line 5, column 27: the jobs' requirements form a cycle: a → b → c → a (each job requires the one before it)",
        ),
        (
            "self-dependency",
            "name: w\njobs:\n  a:\n    command: x\n    requires:\n      - a: FINISHED\n",
            "line 6, column 9: job `a` requires itself",
        ),
        (
            "memory of zero",
            "name: w\njobs:\n  a:\n    command: x\n    resources: {max_memory: 0}\n",
            "line 5, column 29: invalid jobs.a.resources.max_memory `0`: it must be between 1 and 16777216 MiB (16 TiB)",
        ),
        (
            "memory above 16 TiB",
            "name: w\njobs:\n  a:\n    command: x\n    resources: {max_memory: 16777217}\n",
            "line 5, column 29: invalid jobs.a.resources.max_memory `16777217`: it must be between 1 and 16777216 MiB (16 TiB)",
        ),
        (
            "cpu of zero",
            "name: w\njobs:\n  a:\n    command: x\n    resources: {max_cpu: 0}\n",
            "line 5, column 26: invalid jobs.a.resources.max_cpu `0`: it must be between 1 and 819200",
        ),
        (
            "bad cpu list",
            "name: w\njobs:\n  a:\n    command: x\n    resources: {cpu_cores: \"3-1\"}\n",
            "line 5, column 28: invalid jobs.a.resources.cpu_cores `3-1`: the range 3-1 runs backwards",
        ),
        (
            "pids of zero",
            "name: w\njobs:\n  a: {command: x, pids: 0}\n",
            "line 3, column 25: invalid jobs.a.pids `0`: it must be between 1 and 4194304",
        ),
        (
            "disk without number",
            "name: w\njobs:\n  a: {command: x, disk: big}\n",
            "line 3, column 25: invalid jobs.a.disk `big`: it does not start with a number; write it like 512M, 10G or 1T",
        ),
        (
            "duration without unit",
            "name: w\ntimeout: 10\njobs:\n  a: {command: x}\n",
            "line 2, column 10: invalid timeout `10`: `10` has no unit; write it like 500ms, 2s, 1m or 1h30m",
        ),
        (
            "zero timeout",
            "name: w\njobs:\n  a: {command: x, timeout: 0s}\n",
            "line 3, column 28: invalid jobs.a.timeout `0s`: it must be longer than zero",
        ),
        (
            "max_parallel of zero",
            "name: w\nmax_parallel: 0\njobs:\n  a: {command: x}\n",
            "line 2, column 15: invalid max_parallel `0`: it must be between 1 and 100000",
        ),
        (
            "max_backoff shorter than backoff",
            "name: w\njobs:\n  a:\n    command: x\n    retry: {limit: 2, backoff: 1m, max_backoff: 10s}\n",
            "line 5, column 49: invalid jobs.a.retry.max_backoff `10s`: it is shorter than retry.backoff (1m)",
        ),
        (
            "absurd retry limit",
            "name: w\njobs:\n  a:\n    command: x\n    retry: {limit: 1000}\n",
            "line 5, column 20: invalid jobs.a.retry.limit `1000`: it must be between 0 and 100",
        ),
        (
            "bad network",
            "name: w\njobs:\n  a: {command: x, network: bridge}\n",
            "line 3, column 28: invalid jobs.a.network `bridge`: expected `none` or `host`",
        ),
        (
            "empty command",
            "name: w\njobs:\n  a:\n    command: \"  \"\n",
            "line 4, column 14: job `a` has an empty command",
        ),
        (
            "missing command",
            "name: w\njobs:\n  a:\n    args: [x]\n",
            "line 3, column 3: job `a` has no command (give `command`, or one in `defaults`)",
        ),
        (
            "bad job name",
            "name: w\njobs:\n  \"a b\": {command: x}\n",
            "line 3, column 3: invalid job name `a b`: only letters, digits, '_', '.' and '-' are allowed",
        ),
        (
            "long job name",
            &format!("name: w\njobs:\n  {}: {{command: x}}\n", "j".repeat(65)),
            &format!(
                "line 3, column 3: invalid job name `{}`: it is longer than 64 characters",
                "j".repeat(65)
            ),
        ),
        (
            "no jobs",
            "name: w\njobs: {}\n",
            "line 2, column 7: the workflow has no jobs (give at least one under `jobs`)",
        ),
        (
            "jobs missing",
            "name: w\n",
            "the workflow has no jobs (give at least one under `jobs`)",
        ),
        (
            "unknown condition",
            "name: w\njobs:\n  a: {command: x}\n  b:\n    command: x\n    requires:\n      - a: DONE\n",
            "line 7, column 12: job `b`: unknown condition `DONE` (expected COMPLETED, FAILED, STOPPED, SKIPPED or FINISHED)",
        ),
        (
            "requirement without condition",
            "name: w\njobs:\n  a: {command: x}\n  b:\n    command: x\n    requires:\n      - a\n",
            "line 7, column 9: job `b`: each entry of `requires` names one job and its condition, like `- fetch: COMPLETED`",
        ),
        (
            "requires in defaults",
            "name: w\ndefaults:\n  needs: [a]\njobs:\n  a: {command: x}\n",
            "line 3, column 10: `defaults` cannot hold `needs`: each job names its own requirements",
        ),
        (
            "variable both plain and secret",
            "name: w\njobs:\n  a:\n    command: x\n    environment: {T: 1}\n    secret_environment: {T: 2}\n",
            "line 3, column 3: invalid jobs.a.secret_environment `T`: the variable is also in `environment`",
        ),
        (
            "wrong type",
            "name: w\njobs:\n  a: {command: x, pids: many}\n",
            "line 3, column 25: jobs.a.pids must be a whole number (0 or more), not `many`",
        ),
        (
            "not YAML",
            "name: [\n",
            "line 1, column 7: unclosed bracket '['",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(_, yaml, expected)| message(yaml) != *expected)
        .map(|(what, yaml, _)| format!("{what}: {}", message(yaml)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn errors_carry_their_place_as_data() {
    let error = WorkflowSpec::parse("name: w\njobs:\n  a: {command: x, bogus: 1}\n").unwrap_err();
    assert_eq!(
        error.location(),
        Some(Location {
            line: 3,
            column: 19
        })
    );
    let error = WorkflowSpec::parse("name: w\njobs:\n  a: {command: x, needs: [b]}\n").unwrap_err();
    assert!(
        matches!(&error, SpecError::UnknownJob { job, name, .. } if job == "a" && name == "b"),
        "{error:?}"
    );
    let cycle = "name: w\njobs:\n  b: {command: x, needs: [a]}\n  a: {command: x, needs: [b]}\n";
    let error = WorkflowSpec::parse(cycle).unwrap_err();
    assert!(
        matches!(&error, SpecError::Cycle { cycle, .. } if cycle == &["a", "b"]),
        "{error:?}"
    );
}

#[test]
fn a_long_cycle_is_shown_from_its_smallest_name() {
    let mut yaml = String::from("name: w\njobs:\n  entry: {command: x, needs: [j5]}\n");
    for i in 0..10 {
        let next = (i + 1) % 10;
        yaml.push_str(&format!("  j{i}: {{command: x, needs: [j{next}]}}\n"));
    }
    let error = message(&yaml);
    assert!(
        error.contains("a cycle: j0 → j9 → j8 → j7 → j6 → j5 → j4 → j3 → j2 → j1 → j0 "),
        "{error}"
    );
}

#[test]
fn more_than_the_job_limit_is_refused() {
    let mut yaml = String::from("name: w\ndefaults: {command: x}\njobs:\n");
    for i in 0..=silo_workflow::spec::MAX_JOBS {
        yaml.push_str(&format!("  j{i}:\n"));
    }
    assert_eq!(
        message(&yaml),
        "line 4, column 3: the workflow has 100001 jobs, more than the 100000 allowed"
    );
}

#[test]
fn yaml_anchors_cannot_blow_up() {
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    assert!(WorkflowSpec::parse(bomb).is_err());
    let deep = "[".repeat(10_000);
    assert!(WorkflowSpec::parse(&deep).is_err());
}

#[test]
fn anchors_aliases_and_merge_keys_are_read() {
    let yaml = r#"
name: anchors
jobs:
  base: &base
    command: python3
    environment: &env {DATASET: iris, SEED: 7}
    resources: {max_memory: 512}
  train:
    <<: *base
    args: [train.py]
    environment: {<<: *env, SEED: 8}
    needs: [base]
  eval:
    <<: [{args: [eval.py], timeout: 1m}, *base]
    command: !!str 3
    needs: [train]
"#;
    let spec = WorkflowSpec::parse(yaml).unwrap();
    let (base, train, eval) = (&spec.jobs[0], &spec.jobs[1], &spec.jobs[2]);
    assert_eq!(train.command, "python3");
    assert_eq!(train.args, ["train.py"]);
    assert_eq!(train.resources.memory_bytes, Some(512 << 20));
    assert_eq!(
        base.env,
        [
            ("DATASET".into(), "iris".into()),
            ("SEED".into(), "7".into())
        ]
    );
    // The mapping's own keys win over what it merges, and keep their place first.
    assert_eq!(
        train.env,
        [
            ("SEED".into(), "8".into()),
            ("DATASET".into(), "iris".into())
        ]
    );
    // Of two sources, the earlier wins; `!!str` keeps a number as text.
    assert_eq!(eval.command, "3");
    assert_eq!(eval.args, ["eval.py"]);
    assert_eq!(eval.timeout, Some(Duration::from_secs(60)));
    assert_eq!(eval.env, base.env);
}

#[test]
fn values_are_read_as_yaml_types_them() {
    let yaml = "name: 2026\nfail_fast: True\njobs:\n  a:\n    command: ~\n    args: [1, true, '', ~]\n    pids: 0x40\n    continue_on_failure: FALSE\n    environment: {N: 1, E: }\ndefaults: {command: x}\n";
    let spec = WorkflowSpec::parse(yaml).unwrap();
    assert_eq!(spec.name, "2026");
    assert!(spec.fail_fast);
    let a = &spec.jobs[0];
    assert_eq!(a.command, "x", "null is no value, so the default applies");
    assert_eq!(a.args, ["1", "true", "", ""]);
    assert_eq!(a.resources.pids, Some(64));
    assert!(!a.continue_on_failure);
    assert_eq!(a.env, [("N".into(), "1".into()), ("E".into(), "".into())]);
}

#[test]
fn the_core_schema_tags_change_nothing() {
    let tagged = "name: !!str w\njobs: !!map\n  a: {command: x, pids: !!int 5, args: !!seq [a], continue_on_failure: !!bool true}\n";
    let plain =
        "name: w\njobs:\n  a: {command: x, pids: 5, args: [a], continue_on_failure: true}\n";
    assert_eq!(
        WorkflowSpec::parse(tagged).unwrap(),
        WorkflowSpec::parse(plain).unwrap()
    );
}

#[test]
fn yaml_that_a_workflow_cannot_use_is_refused_with_its_place() {
    let cases: &[(&str, &str)] = &[
        (
            "name: w\njobs:\n  a: {command: x, pids: '5'}\n",
            "line 3, column 25: jobs.a.pids must be a whole number (0 or more), not `5`",
        ),
        (
            "name: w\njobs:\n  a: {command: x, pids: -1}\n",
            "line 3, column 25: jobs.a.pids must be a whole number (0 or more), not `-1`",
        ),
        (
            "name: w\nfail_fast: yes\njobs:\n  a: {command: x}\n",
            "line 2, column 12: fail_fast must be `true` or `false`, not `yes`",
        ),
        (
            "name: w\njobs:\n  a: {command: [x]}\n",
            "line 3, column 16: jobs.a.command must be text, not a list",
        ),
        (
            "name: w\njobs:\n  a: {command: x, args: x}\n",
            "line 3, column 25: jobs.a.args must be a list, not `x`",
        ),
        (
            "name: w\njobs:\n  a: {command: x, args: [x, {y: z}]}\n",
            "line 3, column 29: jobs.a.args[1] must be text, not a mapping",
        ),
        (
            "name: w\njobs:\n  a: {command: x, environment: {A: [1]}}\n",
            "line 3, column 36: jobs.a.environment.A must be text, not a list",
        ),
        (
            "name: w\njobs: [a, b]\n",
            "line 2, column 7: jobs must be a mapping of job names to jobs, not a list",
        ),
        (
            "name: w\njobs:\n  a: x\n",
            "line 3, column 6: jobs.a must be a mapping, not `x`",
        ),
        (
            "- a\n- b\n",
            "line 1, column 1: a workflow file (name, jobs, ...) must be a mapping, not a list",
        ),
        (
            "name: w\n? [a]\n: 1\njobs:\n  a: {command: x}\n",
            "line 2, column 3: a key here is one of name, jobs, max_parallel, timeout, fail_fast, defaults, not a list",
        ),
        (
            "name: w\njobs:\n  ? {a: 1}\n  : {command: x}\n",
            "line 3, column 5: job names are text, not a mapping",
        ),
        (
            "jobs:\n  a: {command: x}\n",
            "line 1, column 1: missing key `name`",
        ),
        (
            "name: !!binary aGVsbG8=\njobs:\n  a: {command: x}\n",
            "line 1, column 16: the tag `!!binary` is not one a workflow file may use (its values are text, numbers, booleans, lists and mappings; `!!str` makes a value text)",
        ),
        (
            "name: w\njobs:\n  a: !job {command: x}\n",
            "line 3, column 11: the tag `!job` is not one a workflow file may use (its values are text, numbers, booleans, lists and mappings; `!!str` makes a value text)",
        ),
        ("", "missing key `name`"),
        (
            "name: w\njobs:\n  a: {command: x}\n---\nname: v\n",
            "line 4, column 1: a workflow file holds one YAML document; this is a second",
        ),
        (
            "name: w\njobs:\n  a: &a {command: x, args: [*a]}\n",
            "line 3, column 29: this alias names a collection that contains it; a workflow file cannot refer to itself",
        ),
        (
            "name: w\njobs:\n  a: {command: x, <<: 5}\n",
            "line 3, column 23: a merge key (`<<`) takes a mapping or a list of mappings",
        ),
        (
            "name: w\njobs:\n  a: {command: x, needs: *missing}\n",
            "line 3, column 26: while parsing node, found unknown anchor",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(yaml, expected)| message(yaml) != *expected)
        .map(|(yaml, _)| format!("{yaml:?}: {}", message(yaml)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn nesting_and_repeated_aliases_are_bounded() {
    let deep = format!(
        "name: w\njobs:\n  a: {{command: x, args: {}{}}}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(
        message(&deep),
        "line 3, column 86: collections are nested more than 64 deep"
    );
    // Each alias is the same node, read again where it is used: a list of ten aliases of a
    // list of ten thousand arguments in each of twenty jobs reads two million values.
    let mut yaml = format!(
        "name: w\ndefaults:\n  command: x\n  args: &many [{}]\njobs:\n",
        vec!["y"; 10_000].join(", ")
    );
    for i in 0..200 {
        yaml.push_str(&format!("  j{i}: {{args: *many}}\n"));
    }
    let error = message(&yaml);
    assert!(
        error.contains("aliases repeat more than 1000000 values"),
        "{error}"
    );
    // Merges that copy a large mapping into many others are bounded the same way.
    let mut yaml = format!(
        "name: w\nx: &big {{{}}}\n",
        (0..20_000)
            .map(|i| format!("k{i}: v"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for i in 0..60 {
        yaml.push_str(&format!("m{i}: {{<<: *big}}\n"));
    }
    assert_eq!(
        message(&yaml),
        "line 53, column 6: merge keys copy more than 1000000 entries"
    );
    // A long text used many times: few values, but each use a copy. A megabyte a hundred
    // times would be 100 MiB read from a 1 MiB file (a million times, 1 TiB).
    let yaml = format!(
        "name: w\ndefaults:\n  command: &long \"{}\"\njobs:\n  a:\n    args: [{}]\n",
        "x".repeat(1 << 20),
        vec!["*long"; 100].join(", ")
    );
    let error = message(&yaml);
    assert!(
        error.contains("aliases repeat more than 16 MiB of text"),
        "{error}"
    );
    // A file of small values: each costs the reader memory, so their number is bounded
    // (4.2 MB of `0,` here; the file's 16 MiB alone would allow eight million).
    let yaml = format!(
        "name: w\njobs:\n  a:\n    command: x\n    args: [{}]\n",
        "0,".repeat(2_100_000)
    );
    let error = message(&yaml);
    assert!(
        error.contains("the file has more than 2000000 values"),
        "{error}"
    );
    let error = message(&" ".repeat((16 << 20) + 1));
    assert!(error.contains("16777216"), "{error}");
}

/// A chain through every job plus a fan-out from the first: 10,000 jobs, ~20,000 edges.
fn chain_with_fan_out(jobs: usize) -> String {
    let mut yaml = String::from("name: big\njobs:\n  j0: {command: x}\n");
    for i in 1..jobs {
        yaml.push_str(&format!(
            "  j{i}:\n    command: x\n    needs: [j{}]\n    requires:\n      - j0: FINISHED\n",
            i - 1
        ));
    }
    yaml.replace(
        "needs: [j0]\n    requires:\n      - j0: FINISHED\n",
        "needs: [j0]\n",
    )
}

#[test]
fn validating_ten_thousand_jobs_is_fast() {
    let yaml = chain_with_fan_out(10_000);
    let start = Instant::now();
    let spec = WorkflowSpec::parse(&yaml).unwrap();
    let took = start.elapsed();
    assert_eq!(spec.jobs.len(), 10_000);
    assert_eq!(spec.jobs[9_999].requires.len(), 2);
    // The release build takes well under 100 ms; a debug build is allowed much more.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eprintln!("parsing and validating 10,000 jobs took {took:?}");
}

proptest! {
    #[test]
    fn random_text_is_refused_or_accepted_without_panicking(yaml in "\\PC{0,200}") {
        let _ = WorkflowSpec::parse(&yaml);
    }

    #[test]
    fn random_yaml_tokens_never_panic(
        tokens in proptest::collection::vec(
            prop_oneof![
                Just("{"), Just("}"), Just("["), Just("]"), Just(": "), Just(", "), Just("- "),
                Just("\n"), Just("\n  "), Just("&a "), Just("&b "), Just("*a"), Just("*b"),
                Just("<<: "), Just("name"), Just("jobs"), Just("command"), Just("x"), Just("~"),
                Just("!!str "), Just("'q'"), Just("---\n"), Just("needs"), Just("7"),
            ],
            0..40,
        ),
    ) {
        let _ = WorkflowSpec::parse(&format!("name: w\njobs:\n  a: {}", tokens.concat()));
        let _ = WorkflowSpec::parse(&tokens.concat());
    }

    #[test]
    fn random_workflow_like_yaml_never_panics(
        names in proptest::collection::vec("[a-c]{1,2}", 1..6),
        keys in proptest::collection::vec(
            prop_oneof![
                Just("command: x"), Just("command: ''"), Just("needs: [a]"), Just("needs: [b, c]"),
                Just("requires: [{a: FAILED}]"), Just("requires: [{b: nope}]"), Just("requires: [1]"),
                Just("pids: 0"), Just("disk: 99999999P"), Just("timeout: 1h"), Just("retry: {limit: 7}"),
                Just("resources: {max_memory: 18446744073709551615}"), Just("resources: {cpu_cores: '9-'}"),
                Just("environment: {A: x, A: y}"), Just("bogus: 1"), Just("network: host"),
            ],
            0..12,
        ),
    ) {
        let mut yaml = String::from("name: p\njobs:\n");
        for (i, name) in names.iter().enumerate() {
            let own: Vec<&str> = keys.iter().skip(i).step_by(names.len()).copied().collect();
            yaml.push_str(&format!("  {name}: {{{}}}\n", own.join(", ")));
        }
        if let Ok(spec) = WorkflowSpec::parse(&yaml) {
            for job in &spec.jobs {
                prop_assert!(!job.command.trim().is_empty());
                for requirement in &job.requires {
                    prop_assert!(requirement.job < spec.jobs.len());
                }
            }
        }
    }
}
