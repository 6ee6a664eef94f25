//! `bulkwatch healthcheck`: probes a running worker's health endpoint and
//! turns the answer into an exit code, for container health checks.
//!
//! The runtime image has no shell and no curl, so ECS (or Docker) runs the
//! binary itself in exec form: `["/bulkwatch", "healthcheck"]`. Exit 0 means
//! healthy, 1 unhealthy; 2 is avoided on purpose, because Docker reserves it
//! for health checks, so even a bad setting here exits 1. Exactly one line
//! goes to stderr either way, which is what `docker inspect` and the ECS
//! console show.
//!
//! Where to probe: `--url`, else `--addr`, else the worker's own `ops.listen`
//! read from the same settings the worker reads (the container's
//! `BULKWATCH_*` environment and `--config`), so the task definition needs
//! no second copy of the port. An all-interfaces listen address (0.0.0.0,
//! [::]) is probed on loopback.
//!
//! It probes `/health/live` by default, the answer a supervisor should
//! restart on; `--ready` probes `/health/ready` instead, which also fails
//! during an AWS outage (see `ops::health` for why that is not a reason to
//! restart a fleet).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::config::Config;

/// The longest part of a failure line taken from the endpoint's answer.
const DETAIL_MAX: usize = 400;

#[derive(Debug, Args, Clone)]
pub struct HealthcheckArgs {
    /// Full URL to probe, e.g. http://127.0.0.1:9090/health/ready.
    #[arg(long, value_name = "URL", conflicts_with_all = ["addr", "ready"])]
    pub url: Option<String>,

    /// host:port of the worker's health endpoint. [default: the `ops.listen`
    /// setting (env BULKWATCH_OPS__LISTEN), with 0.0.0.0 probed as
    /// 127.0.0.1]
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<String>,

    /// Probe /health/ready (stream, store and leases) instead of
    /// /health/live (the processing loop makes progress).
    #[arg(long)]
    pub ready: bool,

    /// Give up and report unhealthy after this long (connect and answer).
    /// Keep it under the health check's own timeout.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The outcome of one probe: healthy or not, and the line that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub line: String,
}

/// Runs the command. `load` reads the settings, only when neither `--url`
/// nor `--addr` says where to probe.
pub fn run(
    args: &HealthcheckArgs,
    load: impl FnOnce() -> Result<Config, crate::config::ConfigError>,
) -> ExitCode {
    let verdict = match target(args, load) {
        Ok(url) => probe(&url, args.timeout),
        Err(why) => Verdict {
            healthy: false,
            line: format!("unhealthy: {why}"),
        },
    };
    eprintln!("bulkwatch healthcheck: {}", verdict.line);
    if verdict.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The URL to probe.
pub fn target(
    args: &HealthcheckArgs,
    load: impl FnOnce() -> Result<Config, crate::config::ConfigError>,
) -> Result<String, String> {
    let path = if args.ready {
        "/health/ready"
    } else {
        "/health/live"
    };
    if let Some(url) = &args.url {
        return Ok(url.clone());
    }
    if let Some(addr) = &args.addr {
        let host = match addr.parse::<SocketAddr>() {
            Ok(sa) => loopback_if_unspecified(sa).to_string(),
            // A host name and port: used as given.
            Err(_) => addr.clone(),
        };
        return Ok(format!("http://{host}{path}"));
    }
    let config = load().map_err(|e| format!("cannot tell where to probe: {e}"))?;
    match config.ops.listen_addr() {
        Ok(Some(sa)) => Ok(format!("http://{}{path}", loopback_if_unspecified(sa))),
        Ok(None) => Err(
            "the health endpoint is off (ops.listen = \"off\"); set BULKWATCH_OPS__LISTEN or pass --addr"
                .to_owned(),
        ),
        Err(e) => Err(format!("cannot tell where to probe: {e}")),
    }
}

/// A worker listening on every interface is reached on loopback, which
/// needs no network and cannot be firewalled off from inside the task.
fn loopback_if_unspecified(sa: SocketAddr) -> SocketAddr {
    match sa.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), sa.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), sa.port())
        }
        _ => sa,
    }
}

/// One GET with an overall deadline. Any 2xx is healthy; anything else,
/// including no answer in time, is not.
pub fn probe(url: &str, timeout: Duration) -> Verdict {
    let unhealthy = |why: String| Verdict {
        healthy: false,
        line: format!("unhealthy: {url}: {why}"),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return unhealthy(format!("cannot start the async runtime: {e}")),
    };
    // No proxy: a task's HTTP(S)_PROXY is meant for AWS and the outputs,
    // never for its own loopback endpoint.
    let client = match reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => return unhealthy(format!("cannot build an HTTP client: {}", chain(&e))),
    };
    let answer = rt.block_on(async {
        // The deadline also covers reading the body.
        tokio::time::timeout(timeout, async {
            let resp = client.get(url).send().await?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            Ok::<_, reqwest::Error>((status, body))
        })
        .await
    });
    match answer {
        Err(_) => unhealthy(format!("no answer within {}", fmt_duration(timeout))),
        Ok(Err(e)) if e.is_timeout() => {
            unhealthy(format!("no answer within {}", fmt_duration(timeout)))
        }
        Ok(Err(e)) => unhealthy(chain(&e)),
        Ok(Ok((status, _))) if status.is_success() => Verdict {
            healthy: true,
            line: format!("healthy: {url} answered {}", status.as_u16()),
        },
        Ok(Ok((status, body))) => unhealthy(format!(
            "answered {}{}",
            status.as_u16(),
            match failing_checks(&body) {
                Some(s) => format!(": {s}"),
                None => String::new(),
            }
        )),
    }
}

/// The failing checks of a health answer (`{"status": ..., "checks":
/// {"name": {"ok": false, "detail": "..."}}}`) as `name: detail; ...`, or
/// the start of the body when it is not such an answer. One line, bounded.
pub fn failing_checks(body: &str) -> Option<String> {
    let summary = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => {
            let checks = v.get("checks").and_then(|c| c.as_object());
            let failing: Vec<String> = checks
                .map(|m| {
                    m.iter()
                        .filter(|(_, c)| c.get("ok").and_then(|ok| ok.as_bool()) == Some(false))
                        .map(|(name, c)| match c.get("detail").and_then(|d| d.as_str()) {
                            Some(d) => format!("{name}: {d}"),
                            None => name.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if failing.is_empty() {
                body.trim().to_owned()
            } else {
                failing.join("; ")
            }
        }
        Err(_) => body.trim().to_owned(),
    };
    let one_line: String = summary
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.is_empty() {
        return None;
    }
    Some(truncate(&one_line, DETAIL_MAX))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// An error and its causes on one line: reqwest's own message ("error
/// sending request") says little; the cause ("Connection refused") says
/// what an operator needs.
fn chain(e: &dyn std::error::Error) -> String {
    // reqwest's top message repeats the URL, which the line already has.
    let mut parts = match e.source() {
        Some(_) if e.to_string().starts_with("error sending request") => Vec::new(),
        _ => vec![e.to_string()],
    };
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> HealthcheckArgs {
        HealthcheckArgs {
            url: None,
            addr: None,
            ready: false,
            timeout: Duration::from_secs(2),
        }
    }

    fn no_config() -> Result<Config, crate::config::ConfigError> {
        panic!("settings must not be read when --url or --addr is given")
    }

    #[test]
    fn url_is_used_as_given() {
        let a = HealthcheckArgs {
            url: Some("http://10.1.2.3:9999/health/ready".into()),
            ..args()
        };
        assert_eq!(
            target(&a, no_config).unwrap(),
            "http://10.1.2.3:9999/health/ready"
        );
    }

    #[test]
    fn addr_on_every_interface_is_probed_on_loopback() {
        let a = HealthcheckArgs {
            addr: Some("0.0.0.0:9090".into()),
            ..args()
        };
        assert_eq!(
            target(&a, no_config).unwrap(),
            "http://127.0.0.1:9090/health/live"
        );
        let a = HealthcheckArgs {
            addr: Some("[::]:9091".into()),
            ready: true,
            ..args()
        };
        assert_eq!(
            target(&a, no_config).unwrap(),
            "http://[::1]:9091/health/ready"
        );
        let a = HealthcheckArgs {
            addr: Some("worker.local:9090".into()),
            ..args()
        };
        assert_eq!(
            target(&a, no_config).unwrap(),
            "http://worker.local:9090/health/live"
        );
    }

    #[test]
    fn default_target_comes_from_ops_listen() {
        let mut config = Config::default();
        assert_eq!(
            target(&args(), || Ok(config.clone())).unwrap(),
            "http://127.0.0.1:9090/health/live"
        );
        config.ops.listen = "127.0.0.2:7000".into();
        assert_eq!(
            target(&args(), || Ok(config.clone())).unwrap(),
            "http://127.0.0.2:7000/health/live"
        );
        config.ops.listen = "off".into();
        let err = target(&args(), || Ok(config.clone())).unwrap_err();
        assert!(err.contains("off"), "{err}");
    }

    #[test]
    fn failing_checks_are_summarised_on_one_line() {
        let body = r#"{"status":"fail","checks":{
            "stream":{"ok":false,"detail":"ListShards failed: timeout\nretrying"},
            "store":{"ok":true,"detail":"fine"},
            "leases":{"ok":false,"detail":"2 shard(s) to read but no reader runs"}}}"#;
        let s = failing_checks(body).unwrap();
        assert_eq!(
            s,
            "leases: 2 shard(s) to read but no reader runs; stream: ListShards failed: timeout retrying"
        );
        assert_eq!(failing_checks("not found\n").unwrap(), "not found");
        assert_eq!(failing_checks("  "), None);
        let long = "x".repeat(5000);
        assert!(failing_checks(&long).unwrap().chars().count() <= DETAIL_MAX + 1);
    }

    #[test]
    fn nothing_listening_is_unhealthy_and_says_why() {
        // Bind and drop a listener to find a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let v = probe(
            &format!("http://127.0.0.1:{port}/health/live"),
            Duration::from_secs(2),
        );
        assert!(!v.healthy);
        assert!(v.line.starts_with("unhealthy: "), "{}", v.line);
        assert!(v.line.to_lowercase().contains("refused"), "{}", v.line);
        assert!(!v.line.contains('\n'));
    }
}
