//! The deployment files in `deploy/` checked against the code, so that they
//! cannot drift from it unnoticed:
//!
//! - the ECS task definition: Fargate, a `stopTimeout` above the default
//!   shutdown grace, an exec-form health check that runs the binary's own
//!   `healthcheck`, the awslogs driver, settings the binary accepts;
//! - the worker's IAM policy: every AWS operation the code in `src/` calls
//!   is allowed, and nothing else is (except the optional enhanced fan-out
//!   actions, which are documented as such);
//! - the Terraform: it builds the policy and the task definition from those
//!   two JSON files, and its tables have the key schema and TTL attribute
//!   the DynamoDB store uses;
//! - the Twilio sink role, the Dockerfile, and no account id anywhere.
//!
//! None of these needs AWS or LocalStack.
//!
//! How the AWS operations are found: every `aws-sdk-*` crate the worker
//! depends on lists its operations as modules under `src/operation/` (one
//! per API call, snake_case). The test reads those lists from the crates'
//! sources (located with `cargo metadata`), then looks through the
//! non-test code in `src/` for calls of the form `.operation_name()`,
//! which is how the SDK's fluent builders start a call
//! (`client.get_records().shard_iterator(..).send()`). Each found operation
//! becomes an IAM action: the service's prefix plus the operation in
//! CamelCase, except for the few batch operations that IAM authorises as
//! their single form (SQS SendMessageBatch is `sqs:SendMessage`, SNS
//! PublishBatch is `sns:Publish`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid JSON: {e}"))
}

/// The enhanced fan-out actions: granted by an optional statement for a
/// reader that subscribes to shards, called by no code yet.
const OPTIONAL_EFO: &[&str] = &[
    "kinesis:DescribeStreamConsumer",
    "kinesis:RegisterStreamConsumer",
    "kinesis:SubscribeToShard",
];

// --- the task definition ------------------------------------------------

fn container(td: &Value) -> &Value {
    let containers = td["containerDefinitions"]
        .as_array()
        .expect("containerDefinitions is an array");
    assert_eq!(
        containers.len(),
        1,
        "one container: the worker (a sidecar would need its own review)"
    );
    &containers[0]
}

#[test]
fn task_definition_is_fargate_with_an_exec_health_check_and_awslogs() {
    let td = json("deploy/ecs/task-definition.json");
    assert_eq!(
        td["requiresCompatibilities"],
        serde_json::json!(["FARGATE"])
    );
    assert_eq!(td["networkMode"], "awsvpc", "Fargate requires awsvpc");
    let c = container(&td);
    assert_eq!(c["essential"], true);

    // ECS sends SIGTERM, waits stopTimeout, then SIGKILLs. The worker must
    // have drained and checkpointed by then.
    let stop = c["stopTimeout"].as_u64().expect("stopTimeout is set");
    let grace = bulkwatch::config::Config::default().shutdown_grace;
    assert!(
        stop > grace.as_secs(),
        "stopTimeout {stop}s must exceed the default shutdown_grace {grace:?}"
    );
    assert!(stop <= 120, "Fargate allows a stopTimeout of at most 120 s");
    let env = environment(c);
    if let Some(g) = env.get("BULKWATCH_SHUTDOWN_GRACE") {
        let g = humantime::parse_duration(g).expect("BULKWATCH_SHUTDOWN_GRACE is a duration");
        assert!(
            stop > g.as_secs(),
            "stopTimeout {stop}s must exceed BULKWATCH_SHUTDOWN_GRACE {g:?}"
        );
    }

    // Exec form ("CMD"), not "CMD-SHELL": the image has no shell.
    let hc = &c["healthCheck"];
    let cmd: Vec<&str> = hc["command"]
        .as_array()
        .expect("healthCheck.command is an array")
        .iter()
        .map(|v| v.as_str().expect("healthCheck.command holds strings"))
        .collect();
    assert_eq!(cmd.first(), Some(&"CMD"), "exec form; got {cmd:?}");
    assert_eq!(&cmd[1..3], ["/bulkwatch", "healthcheck"], "got {cmd:?}");
    // The probe gives up after 2 s by default; ECS must wait longer than
    // that, or a slow answer is a killed check instead of a clear line.
    let timeout = hc["timeout"].as_u64().expect("healthCheck.timeout");
    assert!(
        timeout > 2,
        "healthCheck.timeout {timeout}s must exceed the probe's 2 s"
    );
    assert!(hc["startPeriod"].as_u64().is_some_and(|s| s >= 30));

    let logs = &c["logConfiguration"];
    assert_eq!(logs["logDriver"], "awslogs");
    for key in ["awslogs-group", "awslogs-region", "awslogs-stream-prefix"] {
        assert!(
            logs["options"][key].is_string(),
            "awslogs option {key} is missing"
        );
    }
    // stdout may be an output (transitions as JSON lines). Non-blocking
    // mode drops lines when its buffer is full, which would lose
    // acknowledged transitions.
    assert_ne!(logs["options"]["mode"], "non-blocking");

    // The health port is the one the worker listens on.
    let port = env
        .get("BULKWATCH_OPS__LISTEN")
        .map(|l| l.rsplit(':').next().unwrap().parse::<u64>().unwrap())
        .unwrap_or(9090);
    let ports: Vec<u64> = c["portMappings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert!(ports.contains(&port), "portMappings {ports:?} lack {port}");

    assert_ne!(c["user"], "root");
    assert_ne!(c["user"], "0");
}

fn environment(c: &Value) -> BTreeMap<String, String> {
    c["environment"]
        .as_array()
        .expect("environment is an array")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").to_owned(),
                e["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

/// The task definition's `BULKWATCH_*` settings, with its placeholders
/// filled in, are accepted by the real binary's `config check`: a misspelt
/// key would be rejected there (unknown keys are errors), not silently
/// ignored in production.
#[test]
fn task_definition_settings_pass_config_check() {
    let td = json("deploy/ecs/task-definition.json");
    let env = environment(container(&td));
    // E2E_BULKWATCH_BIN, as in the other integration tests, names another
    // build of the binary (several checkouts may share a target directory).
    let bin = std::env::var_os("E2E_BULKWATCH_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bulkwatch")));
    let mut cmd = Command::new(bin);
    cmd.args(["config", "check"]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BULKWATCH_") {
            cmd.env_remove(&k);
        }
    }
    for (k, v) in &env {
        assert!(
            k.starts_with("BULKWATCH_") || k.starts_with("AWS_"),
            "unexpected variable {k} in the task definition"
        );
        let v = v
            .replace("${stream_name}", "twilio-events")
            .replace("${lease_table}", "bulkwatch")
            .replace("${job_table}", "bulkwatch-jobs")
            .replace("${region}", "eu-west-1");
        assert!(
            !v.contains("${"),
            "{k}={v}: a placeholder this test does not know"
        );
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running bulkwatch config check");
    assert!(
        out.status.success(),
        "bulkwatch config check rejected the task definition's settings:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Value = serde_json::from_slice(&out.stdout).expect("config check prints JSON");
    assert_eq!(config["store"]["type"], "dynamodb");
    assert_eq!(config["store"]["create_tables"], false);
    assert_eq!(config["log_format"], "json");
}

// --- the IAM policy against the code ------------------------------------

/// IAM prefix of each SDK crate the worker may use.
fn iam_prefix(crate_name: &str) -> Option<&'static str> {
    Some(match crate_name {
        "aws-sdk-kinesis" => "kinesis",
        "aws-sdk-dynamodb" => "dynamodb",
        "aws-sdk-sqs" => "sqs",
        "aws-sdk-sns" => "sns",
        "aws-sdk-eventbridge" => "events",
        _ => return None,
    })
}

/// The IAM action that authorises an SDK operation.
fn iam_action(prefix: &str, op: &str) -> String {
    let camel: String = op
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect();
    // IAM has no actions of their own for these batch forms.
    let camel = match (prefix, camel.as_str()) {
        ("sqs", "SendMessageBatch") => "SendMessage".to_owned(),
        ("sqs", "DeleteMessageBatch") => "DeleteMessage".to_owned(),
        ("sqs", "ChangeMessageVisibilityBatch") => "ChangeMessageVisibility".to_owned(),
        ("sns", "PublishBatch") => "Publish".to_owned(),
        _ => camel,
    };
    format!("{prefix}:{camel}")
}

/// Operation name (snake_case) → IAM prefixes of the SDK crates the worker
/// depends on directly that have it, read from the crates' sources.
fn sdk_operations() -> BTreeMap<String, BTreeSet<&'static str>> {
    // Offline (the crates are on disk: they were just built), and for
    // this host only, so that other platforms' crates, never downloaded,
    // are not asked for.
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host_triple(), "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let me = packages
        .iter()
        .find(|p| p["name"] == "bulkwatch")
        .expect("bulkwatch in cargo metadata");
    let direct: BTreeSet<&str> = me["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .filter(|d| d["kind"].is_null())
        .filter_map(|d| d["name"].as_str())
        .collect();
    let sdk_deps: Vec<&str> = direct
        .iter()
        .copied()
        .filter(|d| d.starts_with("aws-sdk-"))
        .collect();
    for d in &sdk_deps {
        assert!(
            iam_prefix(d).is_some(),
            "the worker depends on {d}: add its IAM prefix to this test, and its actions to deploy/iam/worker-policy.json"
        );
    }
    assert!(
        sdk_deps.len() >= 5,
        "expected the five AWS SDK crates, got {sdk_deps:?}"
    );

    let mut ops: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for d in sdk_deps {
        let pkg = packages
            .iter()
            .find(|p| p["name"] == d)
            .unwrap_or_else(|| panic!("{d} not in cargo metadata"));
        let manifest = PathBuf::from(pkg["manifest_path"].as_str().expect("manifest_path"));
        let dir = manifest.parent().unwrap().join("src/operation");
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        let mut n = 0;
        for e in entries {
            let e = e.expect("dir entry");
            if e.file_type().expect("file type").is_dir() {
                ops.entry(e.file_name().to_string_lossy().into_owned())
                    .or_default()
                    .insert(iam_prefix(d).unwrap());
                n += 1;
            }
        }
        assert!(
            n > 3,
            "found only {n} operations of {d} in {}",
            dir.display()
        );
    }
    ops
}

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("running rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// The non-test Rust sources under `src/`: `tests.rs` files and
/// `#[cfg(test)]` modules are left out (they create queues and streams the
/// worker never does), and so are comments.
fn production_sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "tests") {
                    continue;
                }
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let code = strip_comments(&strip_test_modules(&text));
            (p, code)
        })
        .collect()
}

/// Removes `#[cfg(test)]` items: from the attribute to the end of the item
/// it marks (a `mod x;` line, or a braced block matched by counting
/// braces, which is good enough for this code base's test modules).
fn strip_test_modules(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let semi = after.find(';');
        let brace = after.find('{');
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (_, Some(b)) => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (j, ch) in after[b..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + j + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(s), None) => s + 1,
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `.name()` call (no arguments) in `code`, whitespace between the
/// dot and the name allowed, as SDK calls are often chained over lines.
fn empty_calls(code: &str) -> BTreeSet<String> {
    let bytes = code.as_bytes();
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'.' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len()
                && (bytes[j].is_ascii_lowercase() || bytes[j] == b'_' || bytes[j].is_ascii_digit())
            {
                j += 1;
            }
            if j > start && code[j..].starts_with("()") {
                found.insert(code[start..j].to_owned());
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    found
}

/// The IAM actions the worker's code needs, each with the files that call
/// it.
fn actions_called() -> BTreeMap<String, BTreeSet<String>> {
    let ops = sdk_operations();
    let mut called: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, code) in production_sources() {
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        for call in empty_calls(&code) {
            let Some(prefixes) = ops.get(&call) else {
                continue;
            };
            // Only services this file can reach: it names the SDK crate,
            // or it gets a client from a module that does. The latter is
            // rare, so a name shared by two services (e.g. list_tags) in a
            // file naming neither counts for both, which errs towards
            // asking for a permission, never towards missing one.
            let named: BTreeSet<&str> = prefixes
                .iter()
                .copied()
                .filter(|p| code.contains(&format!("aws_sdk_{}", sdk_module(p))))
                .collect();
            let which = if named.is_empty() {
                prefixes.clone()
            } else {
                named
            };
            for p in which {
                called
                    .entry(iam_action(p, &call))
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    called
}

fn sdk_module(prefix: &str) -> &str {
    match prefix {
        "events" => "eventbridge",
        p => p,
    }
}

/// Statement Sid → its actions.
fn policy_statements(rel: &str) -> BTreeMap<String, BTreeSet<String>> {
    let policy = json(rel);
    assert_eq!(policy["Version"], "2012-10-17");
    let mut out = BTreeMap::new();
    for s in policy["Statement"]
        .as_array()
        .expect("Statement is an array")
    {
        assert_eq!(s["Effect"], "Allow");
        assert!(s["Resource"].is_string() || s["Resource"].is_array());
        let sid = s["Sid"]
            .as_str()
            .expect("every statement has a Sid")
            .to_owned();
        assert!(
            sid.chars().all(|c| c.is_ascii_alphanumeric()),
            "IAM Sids are alphanumeric: {sid}"
        );
        let actions: BTreeSet<String> = match &s["Action"] {
            Value::String(a) => [a.clone()].into(),
            Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
            other => panic!("Action of {sid} is {other}"),
        };
        for a in &actions {
            assert!(!a.contains('*'), "{sid}: no wildcard actions ({a})");
        }
        assert!(
            out.insert(sid.clone(), actions).is_none(),
            "Sid {sid} twice"
        );
    }
    out
}

#[test]
fn worker_policy_allows_exactly_the_calls_the_code_makes() {
    let called = actions_called();
    // The scan must see the calls we know are there, or it sees nothing.
    for must in [
        "kinesis:GetRecords",
        "kinesis:GetShardIterator",
        "kinesis:ListShards",
        "dynamodb:UpdateItem",
        "dynamodb:BatchGetItem",
        "sqs:SendMessage",
        "sns:Publish",
        "events:PutEvents",
    ] {
        assert!(
            called.contains_key(must),
            "the source scan did not find {must}; found {:?}",
            called.keys().collect::<Vec<_>>()
        );
    }
    println!("AWS actions called by src/:");
    for (a, files) in &called {
        println!(
            "  {a:32} {}",
            files.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }

    let statements = policy_statements("deploy/iam/worker-policy.json");
    let granted: BTreeSet<&String> = statements.values().flatten().collect();
    let missing: Vec<String> = called
        .iter()
        .filter(|(a, _)| !granted.contains(a))
        .map(|(a, files)| {
            format!(
                "{a} (called in {})",
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/iam/worker-policy.json lacks actions the code calls:\n  {}",
        missing.join("\n  ")
    );
    let extra: Vec<&&String> = granted
        .iter()
        .filter(|a| !called.contains_key(a.as_str()) && !OPTIONAL_EFO.contains(&a.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "deploy/iam/worker-policy.json grants actions no code calls: {extra:?}"
    );

    // The enhanced fan-out actions are granted only by their own statement,
    // labelled optional.
    for (sid, actions) in &statements {
        let efo = actions.iter().any(|a| OPTIONAL_EFO.contains(&a.as_str()));
        if efo {
            assert!(
                sid.ends_with("Optional"),
                "{sid} grants enhanced fan-out actions"
            );
            assert!(actions.iter().all(|a| OPTIONAL_EFO.contains(&a.as_str())));
        }
    }
    // Outputs have statements of their own, so a deployment without them
    // grants none of their permissions.
    for (prefix, label) in [("sqs:", "Sqs"), ("sns:", "Sns"), ("events:", "EventBridge")] {
        for (sid, actions) in &statements {
            if actions.iter().any(|a| a.starts_with(prefix)) {
                assert!(
                    sid.starts_with(label) && sid.ends_with("Optional"),
                    "{prefix} actions belong in an optional {label} statement, not {sid}"
                );
                assert!(
                    actions.iter().all(|a| a.starts_with(prefix)),
                    "{sid} mixes services"
                );
            }
        }
    }
}

#[test]
fn the_source_scan_understands_chained_calls_and_skips_test_code() {
    let code = "let x = self\n    .client\n    .put_item()\n    .table_name(t);\n\
                // self.client.delete_table().send()\n\
                #[cfg(test)]\nmod tests {\n    fn f() { c.create_queue().send(); { } }\n}\n\
                fn g() { c.scan().send() }";
    let code = strip_comments(&strip_test_modules(code));
    let calls = empty_calls(&code);
    assert!(calls.contains("put_item"), "{calls:?}");
    assert!(calls.contains("scan"), "{calls:?}");
    assert!(!calls.contains("delete_table"), "{calls:?}");
    assert!(!calls.contains("create_queue"), "{calls:?}");
    assert_eq!(iam_action("sqs", "send_message_batch"), "sqs:SendMessage");
    assert_eq!(iam_action("sns", "publish_batch"), "sns:Publish");
    assert_eq!(
        iam_action("dynamodb", "describe_time_to_live"),
        "dynamodb:DescribeTimeToLive"
    );
}

// --- Terraform ----------------------------------------------------------

fn terraform() -> String {
    let dir = root().join("deploy/terraform");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/terraform")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `const NAME: &str = "value";` of src/store/dynamodb.rs.
fn store_const(name: &str) -> String {
    let src = read("src/store/dynamodb.rs");
    let prefix = format!("const {name}: &str = \"");
    let start = src
        .find(&prefix)
        .unwrap_or_else(|| panic!("{name} not found in src/store/dynamodb.rs"))
        + prefix.len();
    let end = src[start..].find('"').unwrap() + start;
    src[start..end].to_owned()
}

/// `key = "value"` in HCL, whatever the alignment spaces.
fn hcl_has(tf: &str, key: &str, value: &str) -> bool {
    tf.lines().any(|l| {
        let l = l.trim();
        l.strip_prefix(key)
            .map(|r| r.trim_start())
            .and_then(|r| r.strip_prefix('='))
            .is_some_and(|r| r.trim() == format!("\"{value}\""))
    })
}

#[test]
fn terraform_uses_the_json_files_and_the_store_key_schema() {
    let tf = terraform();
    // The policy and the task definition come from the audited JSON.
    assert!(tf.contains("../iam/worker-policy.json"));
    assert!(tf.contains("../ecs/task-definition.json"));
    // Every statement of the policy has its resources in Terraform.
    for sid in policy_statements("deploy/iam/worker-policy.json").keys() {
        let mapped = tf
            .lines()
            .filter(|l| l.trim_start().starts_with(sid.as_str()))
            .count();
        assert!(
            mapped >= 2,
            "statement {sid} needs an entry in statement_resources and statement_enabled in deploy/terraform"
        );
    }
    // Every ${placeholder} of the task definition is filled in.
    let td = read("deploy/ecs/task-definition.json");
    let mut rest = td.as_str();
    while let Some(i) = rest.find("${") {
        let end = rest[i..].find('}').unwrap() + i;
        let name = &rest[i + 2..end];
        assert!(
            tf.lines()
                .any(|l| l.trim_start().starts_with(name) && l.contains('=')),
            "task definition placeholder ${{{name}}} is not set by the Terraform templatefile call"
        );
        rest = &rest[end..];
    }

    // The tables as src/store/dynamodb.rs expects them.
    let lease_key = store_const("LEASE_KEY");
    let job_sid = store_const("JOB_SID");
    let expires_at = store_const("JOB_EXPIRES_AT");
    assert_eq!(lease_key, "leaseKey", "KCL's lease table layout");
    assert!(
        hcl_has(&tf, "hash_key", &lease_key),
        "lease table hash key {lease_key}"
    );
    assert!(
        hcl_has(&tf, "hash_key", &job_sid),
        "job table hash key {job_sid}"
    );
    assert!(
        hcl_has(&tf, "attribute_name", &expires_at),
        "job table TTL on {expires_at}"
    );
    assert!(
        !tf.contains("range_key"),
        "the store's tables have no sort key"
    );
    assert!(hcl_has(&tf, "billing_mode", "PAY_PER_REQUEST"));
    // The awslogs group exists, and the execution role can write to it.
    assert!(tf.contains("resource \"aws_cloudwatch_log_group\""));
    assert!(tf.contains("AmazonECSTaskExecutionRolePolicy"));
    assert!(tf.contains("resource \"aws_ecs_service\""));
}

// --- Twilio's sink role -------------------------------------------------

#[test]
fn twilio_sink_role_is_trusted_with_an_external_id_and_may_only_write() {
    let trust = json("deploy/iam/twilio-sink-trust-policy.json");
    let s = &trust["Statement"][0];
    assert_eq!(s["Action"], "sts:AssumeRole");
    assert!(
        s["Condition"]["StringEquals"]["sts:ExternalId"].is_string(),
        "Twilio's role must require the external id"
    );
    assert!(s["Principal"]["AWS"].as_str().unwrap().ends_with(":root"));

    let actions: BTreeSet<String> = policy_statements("deploy/iam/twilio-sink-policy.json")
        .into_values()
        .flatten()
        .collect();
    let want: BTreeSet<String> = [
        "kinesis:DescribeLimits",
        "kinesis:ListShards",
        "kinesis:PutRecord",
        "kinesis:PutRecords",
    ]
    .map(String::from)
    .into();
    assert_eq!(actions, want);

    let tf = terraform();
    assert!(tf.contains("sts:ExternalId"));
    for a in &want {
        assert!(tf.contains(a.as_str()), "twilio.tf lacks {a}");
    }
}

// --- the image ----------------------------------------------------------

#[test]
fn dockerfile_builds_static_and_runs_as_non_root_without_a_shell() {
    let df = read("deploy/Dockerfile");
    let froms: Vec<&str> = df.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let last = froms.last().unwrap();
    assert!(
        last.contains("distroless/static") || last.contains("scratch"),
        "runtime base must be distroless/static or scratch: {last}"
    );
    assert!(
        df.contains("deploy/build-static"),
        "the image uses the static build script"
    );
    let user = df
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") || user.contains("nonroot"), "{user}");
    assert!(
        !user.trim_end().ends_with(" 0") && !user.contains(" 0:"),
        "{user}"
    );
    // The binary sits where the task definition's health check calls it.
    assert!(df.contains("/bulkwatch"));
    let hc = df
        .lines()
        .find(|l| l.contains("CMD [\"/bulkwatch\", \"healthcheck\"]"));
    assert!(
        hc.is_some(),
        "exec-form HEALTHCHECK calling /bulkwatch healthcheck"
    );
    assert!(df.contains("ENTRYPOINT [\"/bulkwatch\"]"));

    // .dockerignore lets in only what the build needs; a build script or
    // another source directory added to the crate must be let in too.
    let ignore = read(".dockerignore");
    for needed in ["Cargo.toml", "Cargo.lock", "src/", "deploy/build-static"] {
        assert!(
            ignore.lines().any(|l| l.trim() == format!("!{needed}")),
            "!{needed}"
        );
    }
    for maybe in ["build.rs", "benches", "examples"] {
        if root().join(maybe).exists() {
            assert!(
                ignore
                    .lines()
                    .any(|l| l.trim().trim_end_matches('/') == format!("!{maybe}")),
                "{maybe} exists: let it into the image build in .dockerignore"
            );
        }
    }
}

// --- no account ids -----------------------------------------------------

#[test]
fn deploy_files_hard_code_no_account_id() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("deploy"), &mut files);
    assert!(files.len() >= 8);
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        // Twelve digits in a row, not part of a longer number.
        let b = text.as_bytes();
        let mut run = 0;
        for (i, c) in b.iter().enumerate() {
            if c.is_ascii_digit() {
                run += 1;
            } else {
                assert!(
                    run != 12,
                    "{} holds what looks like an AWS account id near byte {i}",
                    f.display()
                );
                run = 0;
            }
        }
        assert!(run != 12, "{} ends with an account id", f.display());
    }
}
