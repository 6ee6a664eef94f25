//! `type = "webhook"`: an HTTPS POST of the transition JSON, signed.
//!
//! Headers on every request:
//! - `Idempotency-Key: <transition_id>`: the same on every retry and
//!   redelivery, so a receiver can deduplicate.
//! - `X-Bulkwatch-Timestamp: <unix seconds>`
//! - `X-Bulkwatch-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`
//!
//! Signing the timestamp with the body (as Stripe and Slack do) lets a
//! receiver refuse replays of an old, captured request.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::{StatusCode, Url, header};
use sha2::Sha256;
use tokio::{sync::Semaphore, task::JoinSet};

use super::{
    config::{Secret, WebhookConfig},
    sink::{Item, Outcome, SendContext, Sink},
};

pub const TIMESTAMP_HEADER: &str = "X-Bulkwatch-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Bulkwatch-Signature";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// How much of a refusing response is kept for the dead-letter entry.
const RESPONSE_EXCERPT: usize = 4096;
/// A Retry-After longer than this is not believed (a misconfigured server
/// must not stall an output for a day).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The signature header's value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // new_from_slice only fails for fixed-size-key MACs; HMAC takes any key.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Refuses a URL bulkwatch must not post transitions to: anything but https,
/// except http to a loopback host, unless `allow_insecure_http`.
pub(crate) fn check_url(url: &str, allow_insecure_http: bool) -> anyhow::Result<Url> {
    let parsed =
        Url::parse(url).with_context(|| format!("webhook url {url:?} is not a valid URL"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_insecure_http || is_loopback(&parsed) => {}
        "http" => bail!(
            "webhook url {url:?} uses plain http:// to a host that is not loopback; use https://, \
             or set `allow_insecure_http = true` to send signed transitions unencrypted"
        ),
        other => bail!(
            "webhook url {url:?} has scheme {other:?}; only https:// (or http:// to loopback) is supported"
        ),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        bail!("webhook url {url:?} has no host");
    }
    Ok(parsed)
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        // IPv6 hosts come bracketed: "[::1]".
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Reads the secret from the config or the environment.
pub(crate) fn resolve_secret(c: &WebhookConfig) -> anyhow::Result<Secret> {
    match (&c.secret, &c.secret_env) {
        (Some(_), Some(_)) => bail!("webhook output: set `secret` or `secret_env`, not both"),
        (Some(s), None) if !s.expose().is_empty() => Ok(s.clone()),
        (None, Some(var)) => match std::env::var(var) {
            Ok(s) if !s.is_empty() => Ok(Secret::new(s)),
            Ok(_) => bail!("webhook output: environment variable {var} (secret_env) is empty"),
            Err(_) => bail!("webhook output: environment variable {var} (secret_env) is not set"),
        },
        _ => bail!(
            "webhook output: a signing secret is required: set `secret_env = \"VAR\"` (preferred) or `secret`"
        ),
    }
}

/// How a response status is handled. Anything not retried goes to the
/// dead-letter output with the response: it would fail the same way forever.
pub(crate) fn classify_status(status: StatusCode) -> StatusClass {
    if status.is_success() {
        StatusClass::Delivered
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        StatusClass::Retry
    } else {
        // Other 4xx, and 1xx/3xx: redirects are not followed because a
        // redirected POST turns into a GET without the body.
        StatusClass::Reject
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusClass {
    Delivered,
    Retry,
    Reject,
}

pub(crate) struct WebhookSink {
    client: reqwest::Client,
    url: Url,
    secret: Arc<Secret>,
    concurrency: Arc<Semaphore>,
    /// The longest one request can take (reqwest's `timeout` covers it from
    /// connecting to the last byte): the output is alive that long.
    timeout: Duration,
}

impl WebhookSink {
    pub(crate) fn new(c: &WebhookConfig) -> anyhow::Result<Self> {
        let url = check_url(&c.url, c.allow_insecure_http)?;
        let secret = resolve_secret(c)?;
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(c.connect_timeout)
            .timeout(c.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("bulkwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the webhook HTTP client")?;
        Ok(Self {
            client,
            url,
            secret: Arc::new(secret),
            concurrency: Arc::new(Semaphore::new(c.concurrency.max(1))),
            timeout: c.timeout,
        })
    }
}

#[async_trait]
impl Sink for WebhookSink {
    async fn send(&mut self, items: &[&Item], ctx: &SendContext) -> Vec<Outcome> {
        let mut tasks = JoinSet::new();
        for (i, item) in items.iter().enumerate() {
            let (client, url, secret, sem, ctx, timeout) = (
                self.client.clone(),
                self.url.clone(),
                self.secret.clone(),
                self.concurrency.clone(),
                ctx.clone(),
                self.timeout,
            );
            let (body, id) = (item.body.clone(), item.transition_id.clone());
            tasks.spawn(async move {
                // The semaphore is never closed, so acquire cannot fail.
                let _permit = sem.acquire_owned().await;
                // Checked after the wait for a permit, not before: a wave
                // of many jobs queues here behind `concurrency`, and once
                // shutdown's grace ran out none of them may start (the
                // requests already in flight finish).
                if ctx.stopping() {
                    return (i, Outcome::NotSent);
                }
                ctx.request_started(timeout);
                let outcome = post(&client, url, &secret, body, &id).await;
                ctx.request_finished();
                (i, outcome)
            });
        }
        let mut outcomes = vec![Outcome::retry("request task did not finish"); items.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, outcome)) = joined {
                outcomes[i] = outcome;
            }
        }
        outcomes
    }
}

async fn post(
    client: &reqwest::Client,
    url: Url,
    secret: &Secret,
    body: String,
    transition_id: &str,
) -> Outcome {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let sig = signature(secret.expose().as_bytes(), timestamp, body.as_bytes());
    let res = client
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_HEADER, transition_id)
        .header(TIMESTAMP_HEADER, timestamp)
        .header(SIGNATURE_HEADER, sig)
        .body(body)
        .send()
        .await;
    let resp = match res {
        Ok(r) => r,
        // Connect errors, timeouts, resets: the receiver may be back soon.
        // `{:#}`-like chain: reqwest's Display hides the cause.
        // Without the URL: a webhook URL is often a credential itself
        // (Slack's and Teams' carry their token in the path), and this error
        // ends up in logs and dead-letter entries.
        Err(e) => return Outcome::retry(error_chain(&e.without_url())),
    };
    let status = resp.status();
    let retry_after = retry_after(resp.headers());
    match classify_status(status) {
        StatusClass::Delivered => Outcome::Delivered,
        StatusClass::Retry => Outcome::Retry {
            error: format!("HTTP {status}"),
            after: retry_after,
        },
        StatusClass::Reject => {
            let text = resp.text().await.unwrap_or_default();
            let excerpt: String = text.chars().take(RESPONSE_EXCERPT).collect();
            Outcome::Reject {
                error: format!("webhook refused the transition with HTTP {status}"),
                response: Some(format!("HTTP {status}\n\n{excerpt}")),
            }
        }
    }
}

/// Retry-After in its seconds form (the HTTP-date form is rare for APIs and
/// falls back to our own backoff).
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_known_answer() {
        // Computed independently with Python:
        // hmac.new(b'whsec_test', b'1700000000.{"job_sid":"JS1"}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"whsec_test", 1_700_000_000, br#"{"job_sid":"JS1"}"#),
            "v1=ed0815abf54f0fbd624fea1242f5b051c687fa03fcb7813f7e4047f16fcee748"
        );
    }

    #[test]
    fn http_is_refused_except_to_loopback() {
        assert!(check_url("https://example.com/hook", false).is_ok());
        for ok in [
            "http://127.0.0.1:8080/x",
            "http://127.1.2.3/x",
            "http://localhost/x",
            "http://[::1]:9000/x",
        ] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/hook",
            "http://10.0.0.1/x",
            "http://[2001:db8::1]/x",
        ] {
            let err = check_url(bad, false).unwrap_err().to_string();
            assert!(err.contains("allow_insecure_http"), "{bad}: {err}");
            assert!(
                check_url(bad, true).is_ok(),
                "{bad} with allow_insecure_http"
            );
        }
        assert!(check_url("ftp://example.com/", true).is_err());
        assert!(check_url("not a url", true).is_err());
        // A host that merely starts with "localhost" is not loopback.
        assert!(check_url("http://localhost.evil.example/", false).is_err());
    }

    #[test]
    fn status_classification() {
        use StatusClass::*;
        let cases = [
            (200, Delivered),
            (201, Delivered),
            (204, Delivered),
            (500, Retry),
            (502, Retry),
            (503, Retry),
            (504, Retry),
            (429, Retry),
            (408, Retry),
            (400, Reject),
            (401, Reject),
            (403, Reject),
            (404, Reject),
            (409, Reject),
            (410, Reject),
            (413, Reject),
            (422, Reject),
            (301, Reject),
            (302, Reject),
            (307, Reject),
        ];
        for (code, want) in cases {
            assert_eq!(
                classify_status(StatusCode::from_u16(code).unwrap()),
                want,
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_is_capped() {
        let mut h = header::HeaderMap::new();
        h.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(header::RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn secret_sources() {
        let mut c = WebhookConfig {
            url: "https://x".into(),
            secret: None,
            secret_env: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            allow_insecure_http: false,
            concurrency: 1,
        };
        assert!(resolve_secret(&c).is_err(), "a secret is required");
        c.secret = Some(Secret::new("inline"));
        assert_eq!(resolve_secret(&c).unwrap().expose(), "inline");
        c.secret_env = Some("BULKWATCH_TEST_SECRET_THAT_IS_NOT_SET".into());
        assert!(resolve_secret(&c).is_err(), "both");
        c.secret = None;
        let err = resolve_secret(&c).unwrap_err().to_string();
        assert!(
            err.contains("BULKWATCH_TEST_SECRET_THAT_IS_NOT_SET"),
            "{err}"
        );
        // PATH is set in any test environment.
        c.secret_env = Some("PATH".into());
        assert!(resolve_secret(&c).is_ok());
    }

    #[test]
    fn debug_redacts_the_secret() {
        let c = WebhookConfig {
            url: "https://x".into(),
            secret: Some(Secret::new("hunter2")),
            secret_env: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            allow_insecure_http: false,
            concurrency: 1,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
    }
}
