//! LocalStack: where it is, and whether it answers.
//!
//! The AWS settings come from the same variables `eval "$(localstack/up)"`
//! exports, with LocalStack's defaults for any that are unset, so that a
//! plain `cargo test` in a shell without them still works while LocalStack
//! runs. The test's own Kinesis client and every child `bulkwatch` get the
//! same values ([`AwsEnv::vars`]), so both always talk to the same place.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

/// The AWS settings every test and child process uses.
#[derive(Debug, Clone)]
pub struct AwsEnv {
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub endpoint: String,
    pub endpoint_dynamodb: String,
}

impl AwsEnv {
    fn from_env() -> AwsEnv {
        let var = |k: &str, default: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        AwsEnv {
            region: var("AWS_REGION", "us-east-1"),
            access_key_id: var("AWS_ACCESS_KEY_ID", "test"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY", "test"),
            endpoint: var("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            endpoint_dynamodb: var("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:4567"),
        }
    }

    /// The environment a child `bulkwatch` gets.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_REGION", self.region.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB", self.endpoint_dynamodb.clone()),
            // Never wander off to the instance metadata service or a
            // developer's profile: these are LocalStack's fake credentials.
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }
}

/// The AWS settings, without checking that LocalStack runs (for tests that
/// do not need it, such as bad-config exits).
pub fn aws_env() -> &'static AwsEnv {
    static ENV: OnceLock<AwsEnv> = OnceLock::new();
    ENV.get_or_init(AwsEnv::from_env)
}

/// Checks that LocalStack answers and serves Kinesis, once per test
/// process, and returns its settings. Panics (every test that calls it,
/// with the same message) when it does not: these tests must never pass by
/// skipping.
pub fn require() -> &'static AwsEnv {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let env = aws_env();
    if let Err(why) = CHECK.get_or_init(|| check(&env.endpoint)) {
        panic!(
            "\n\nLocalStack is needed by this test and is not usable: {why}\n\
             Start it from the repository root with:\n\n    eval \"$(localstack/up)\"\n\n\
             or run the test command from the README, which starts it for you.\n\
             (Endpoint from AWS_ENDPOINT_URL, default http://127.0.0.1:4566.)\n"
        );
    }
    env
}

/// GET /_localstack/health and look at Kinesis. A plain HTTP/1.0 request
/// over a socket: no runtime, and no chunked encoding to undo.
fn check(endpoint: &str) -> Result<(), String> {
    let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
        format!("AWS_ENDPOINT_URL={endpoint} is not an http:// URL (LocalStack serves plain HTTP)")
    })?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:80")
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport} resolves to no address"))?;
    let timeout = Duration::from_secs(10);
    let mut sock = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
    sock.set_read_timeout(Some(timeout)).ok();
    sock.set_write_timeout(Some(timeout)).ok();
    write!(
        sock,
        "GET /_localstack/health HTTP/1.0\r\nHost: {hostport}\r\nAccept: application/json\r\n\r\n"
    )
    .map_err(|e| format!("cannot send a request to {endpoint}: {e}"))?;
    let mut response = String::new();
    sock.read_to_string(&mut response)
        .map_err(|e| format!("no answer from {endpoint}/_localstack/health: {e}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let health: serde_json::Value = serde_json::from_str(body).map_err(|e| {
        format!(
            "{endpoint}/_localstack/health did not answer JSON ({e}); is something else on that port? \
             It said: {:.200}",
            response
        )
    })?;
    match health["services"]["kinesis"].as_str() {
        Some("running" | "available") => Ok(()),
        Some(other) => Err(format!(
            "LocalStack at {endpoint} answers, but its Kinesis is {other:?} (want \"running\" or \"available\")"
        )),
        None => Err(format!(
            "LocalStack at {endpoint} answers, but does not serve Kinesis (SERVICES must include kinesis)"
        )),
    }
}
