//! A tiny in-process HTTP/1.1 webhook receiver for tests: it verifies each
//! request's signature the way docs/outputs.md tells receivers to, records
//! what it got, and answers with whatever status the test's script says.
//!
//! Hand-rolled on a TcpListener (one request per connection, then close)
//! rather than pulling hyper/axum into the dev-dependencies: a test server
//! needs only Content-Length bodies.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The signature header matched HMAC-SHA256(secret, "{timestamp}.{body}").
    pub signature_ok: bool,
    /// When the request arrived (its head and body read).
    pub at: std::time::SystemTime,
    /// What the server answered.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("webhook body is JSON")
    }
}

/// Decides the answer to each request: (status, body).
pub type Script = Box<dyn FnMut(&Received) -> (u16, String) + Send>;

struct State {
    secret: Vec<u8>,
    script: Mutex<Script>,
    received: Mutex<Vec<Received>>,
    /// How long to wait before answering (a slow receiver).
    delay: Mutex<std::time::Duration>,
    /// Extra response headers, e.g. `Retry-After`.
    headers: Mutex<Vec<(String, String)>>,
}

pub struct WebhookServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl WebhookServer {
    /// Listens on an ephemeral loopback port.
    pub async fn start(secret: &str, script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            secret: secret.as_bytes().to_vec(),
            script: Mutex::new(script),
            received: Mutex::new(Vec::new()),
            delay: Mutex::new(std::time::Duration::ZERO),
            headers: Mutex::new(Vec::new()),
        });
        let accept = Some(tokio::spawn(accept_loop(listener, state.clone())));
        Self {
            addr,
            state,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers every later request only after `delay` (it is recorded in
    /// `received` as soon as it arrives).
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Adds a header to every later response.
    pub fn add_header(&self, name: &str, value: &str) {
        self.state
            .headers
            .lock()
            .unwrap()
            .push((name.to_owned(), value.to_owned()));
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Stops listening: connections are refused until `resume`.
    pub fn stop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn resume(&mut self) {
        // The aborted accept task drops its listener asynchronously; retry
        // the bind briefly until the port is free again.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.accept = Some(tokio::spawn(accept_loop(listener, self.state.clone())));
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(handle(conn, state.clone()));
    }
}

async fn handle(mut conn: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut headers = HashMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8(body).expect("body is UTF-8");
    let signature_ok = verify(&state.secret, &headers, &body);
    let mut received = Received {
        headers,
        body,
        signature_ok,
        at: std::time::SystemTime::now(),
        status: 0,
    };
    let (status, text) = if signature_ok {
        (state.script.lock().unwrap())(&received)
    } else {
        (401, "bad signature".to_owned())
    };
    received.status = status;
    state.received.lock().unwrap().push(received);
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let extra: String = state
        .headers
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let resp = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = conn.write_all(resp.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// The receiver-side check from docs/outputs.md.
fn verify(secret: &[u8], headers: &HashMap<String, String>, body: &str) -> bool {
    let (Some(ts), Some(sig)) = (
        headers.get("x-bulkwatch-timestamp"),
        headers.get("x-bulkwatch-signature"),
    ) else {
        return false;
    };
    let Some(hex_sig) = sig.strip_prefix("v1=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(ts_num) = ts.parse::<u64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(ts_num) > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    mac.verify_slice(&expected).is_ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
