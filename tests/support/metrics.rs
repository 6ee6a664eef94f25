//! The worker's Prometheus endpoint, read the way a scraper reads it: one
//! plain HTTP/1.0 GET of `/metrics`, summed per metric name (over labels
//! such as `shard` and `output`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A loopback address with a port that was free a moment ago, for a
/// worker's `ops.listen`. The port is released before the worker binds it;
/// another process could take it meanwhile, which would make the worker
/// exit at once with a message naming the address, not pass silently.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    l.local_addr().expect("its address")
}

/// Sums of every sample per metric name, or an error saying why the
/// endpoint could not be read (it is not listening yet, for instance).
pub fn scrape(addr: SocketAddr) -> Result<BTreeMap<String, f64>, String> {
    let timeout = Duration::from_secs(5);
    let mut sock = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    sock.set_read_timeout(Some(timeout)).ok();
    write!(sock, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut response = String::new();
    sock.read_to_string(&mut response)
        .map_err(|e| format!("reading /metrics from {addr}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {response:.200}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("/metrics answered {head:.200}"));
    }
    let mut sums = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(v) = value.parse::<f64>() {
            *sums.entry(name.to_owned()).or_insert(0.0) += v;
        }
    }
    Ok(sums)
}

/// One metric's sum, 0 when the endpoint does not show it yet (counters
/// appear with their first increment).
pub fn get(sums: &BTreeMap<String, f64>, name: &str) -> f64 {
    sums.get(name).copied().unwrap_or(0.0)
}
