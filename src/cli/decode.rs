//! `bulkwatch decode`: run record payloads through exactly the worker's
//! decode and track code, without Kinesis, and print what each became.
//!
//! Input: stdin, one record per line (raw bytes, so a record that is not
//! UTF-8 shows up as bad, as it would from Kinesis). A trailing `\n` or
//! `\r\n` is not part of the record. Empty lines are skipped: they are
//! layout, not records (Kinesis cannot deliver an empty record from
//! Twilio). With `--raw FILE...`, each whole file is one record, bytes
//! untouched.
//!
//! Output: one JSON line per record, in input order:
//! `{"class": "bulk_job"|"sink_test"|"other"|"bad", "reason": "..." (bad
//! only), "verdict": "transition"|"replayed"|"duplicate"|"repeat"|"stale"
//! (bulk_job only), "transitions": [ ...transition records... ]}`.
//!
//! Each record is tracked on its own, in order, against a fresh in-memory
//! store, or against the embedded store in `--state-dir` (which then keeps
//! job state across runs). The records get a synthetic origin: stream
//! `stdin`, shard `stdin` (or the file's path with `--raw`), sequence
//! number = the line number (or the file's position in the list), 1-based.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::decode::{Decoded, decode, limits::MAX_RECORD_BYTES};
use crate::source::Origin;
use crate::store::JobStore;
use crate::store::memory::MemoryStore;
use crate::track::{DEFAULT_TERMINAL_TTL, Tracker, Transition};

/// Decode (and track) record payloads from stdin or files.
#[derive(Debug, Clone, clap::Args)]
pub struct DecodeArgs {
    /// Read each FILE as one whole record instead of lines from stdin.
    #[arg(long = "raw", value_name = "FILE", num_args = 1..)]
    pub raw: Vec<PathBuf>,
    /// Keep job state in the embedded store in DIR (default: a fresh
    /// in-memory state for this run only).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How long a terminal job's state is kept.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub terminal_ttl: Duration,
}

impl Default for DecodeArgs {
    fn default() -> Self {
        DecodeArgs {
            raw: Vec::new(),
            state_dir: None,
            terminal_ttl: DEFAULT_TERMINAL_TTL,
        }
    }
}

/// One output line.
#[derive(Debug, serde::Serialize)]
pub struct RecordReport {
    pub class: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<&'static str>,
    pub transitions: Vec<Transition>,
}

pub async fn run(args: DecodeArgs) -> anyhow::Result<()> {
    let store = open_store(&args)?;
    let tracker = Tracker::new(store, args.terminal_ttl);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.raw.is_empty() {
        let stdin = BufReader::new(tokio::io::stdin());
        run_lines(&tracker, stdin, &mut out).await
    } else {
        for (i, path) in args.raw.iter().enumerate() {
            let data = tokio::fs::read(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            let origin = synthetic_origin(&path.display().to_string(), i as u64 + 1);
            let report = process(&tracker, &data, origin).await?;
            emit(&mut out, &report)?;
        }
        Ok(())
    }
}

fn open_store(args: &DecodeArgs) -> anyhow::Result<Arc<dyn JobStore>> {
    match &args.state_dir {
        None => Ok(Arc::new(MemoryStore::new())),
        // Job state is global (not per stream) in the store, so the
        // stream this handle is scoped to does not matter here.
        Some(dir) => Ok(Arc::new(
            crate::store::embedded::EmbeddedStore::open(dir)?.for_stream("stdin"),
        )),
    }
}

/// Reads `input` line by line and reports each record. A line longer than
/// a record can be is not kept in memory: it is drained and reported as too
/// large, so the cost stays bounded whatever is piped in.
pub async fn run_lines<R: AsyncBufRead + Unpin>(
    tracker: &Tracker,
    mut input: R,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut line_no: u64 = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        let Some(len) = read_line(&mut input, &mut line, MAX_RECORD_BYTES + 1).await? else {
            return Ok(());
        };
        line_no += 1;
        if len == 0 {
            continue;
        }
        let origin = synthetic_origin("stdin", line_no);
        let report = if len > line.len() {
            // Only the start was kept: the record is larger than any record
            // can be, and says so with its real size.
            too_large(len)
        } else {
            process(tracker, &line, origin).await?
        };
        emit(out, &report)?;
    }
}

/// Appends one line (without its `\n` or `\r\n`) to `buf`, keeping at
/// most `keep` bytes of it. Returns the record's full length (terminator
/// excluded), or `None` at end of input.
async fn read_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
    keep: usize,
) -> std::io::Result<Option<usize>> {
    let mut total = 0usize;
    let mut started = false;
    let mut last: Option<u8> = None;
    loop {
        let chunk = input.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(started.then_some(total));
        }
        started = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        let room = keep.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        if take > 0 {
            last = Some(chunk[take - 1]);
        }
        total += take;
        input.consume(if done { take + 1 } else { take });
        if done {
            if last == Some(b'\r') {
                total -= 1;
                if buf.len() > total {
                    buf.truncate(total);
                }
            }
            return Ok(Some(total));
        }
    }
}

fn too_large(size: usize) -> RecordReport {
    let e = crate::decode::DecodeError::TooLarge {
        size,
        limit: MAX_RECORD_BYTES,
    };
    RecordReport {
        class: "bad",
        reason: Some(e.to_string()),
        verdict: None,
        transitions: Vec::new(),
    }
}

fn synthetic_origin(shard: &str, sequence: u64) -> Origin {
    Origin {
        stream: Arc::from("stdin"),
        shard_id: Arc::from(shard),
        sequence_number: sequence.to_string(),
        arrival: None,
    }
}

/// Decodes and tracks one record, exactly as the worker does.
pub async fn process(
    tracker: &Tracker,
    data: &[u8],
    origin: Origin,
) -> anyhow::Result<RecordReport> {
    let decoded = decode(data, origin.arrival);
    let class = decoded.class().as_str();
    Ok(match decoded {
        Decoded::Job(event) => {
            let mut verdicts = tracker.track(&[(event, origin)]).await?;
            let verdict = verdicts.pop().context("tracker returned no verdict")?;
            RecordReport {
                class,
                reason: None,
                verdict: Some(verdict.as_str()),
                transitions: verdict.into_transition().into_iter().collect(),
            }
        }
        Decoded::SinkTest(test) => {
            tracing::info!(test_id = %test.test_id, source = %test.source, "sink test event received");
            RecordReport {
                class,
                reason: None,
                verdict: None,
                transitions: Vec::new(),
            }
        }
        Decoded::Other(_) => RecordReport {
            class,
            reason: None,
            verdict: None,
            transitions: Vec::new(),
        },
        Decoded::Bad(e) => RecordReport {
            class,
            reason: Some(e.to_string()),
            verdict: None,
            transitions: Vec::new(),
        },
    })
}

fn emit(out: &mut impl Write, report: &RecordReport) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, report)?;
    out.write_all(b"\n")?;
    // One line at a time, so piping into `jq` or a test reads as it goes.
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const JOB: &str = r#"{"specversion":"1.0","type":"com.twilio.lookup.bulk.job-status-changed","source":"AB1","id":"ID","data":{"job_sid":"JW1","status":"STATUS"}}"#;

    fn job(id: &str, status: &str) -> String {
        JOB.replace("\"ID\"", &format!("\"{id}\""))
            .replace("STATUS", status)
    }

    async fn lines(input: &[u8]) -> Vec<Value> {
        let tracker = Tracker::new(Arc::new(MemoryStore::new()), DEFAULT_TERMINAL_TTL);
        let mut out = Vec::new();
        run_lines(&tracker, input, &mut out).await.unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn one_json_line_per_record_in_order_through_decode_and_track() {
        let input = format!(
            "{}\r\n\n{}\nnot json\n{}\n{}\n{}",
            job("e1", "CREATED"),
            job("e2", "COMPLETED"),
            job("e1", "CREATED"),
            r#"{"specversion":"1.0","type":"com.twilio.eventstreams.test-event","source":"Sink","id":"t","data":{"test_id":"u"}}"#,
            r#"{"specversion":"1.0","type":"x.y","source":"s","id":"o"}"#,
        );
        let out = lines(input.as_bytes()).await;
        assert_eq!(out.len(), 6, "the empty line is skipped: {out:?}");
        let classes: Vec<&str> = out.iter().map(|l| l["class"].as_str().unwrap()).collect();
        assert_eq!(
            classes,
            [
                "bulk_job",
                "bulk_job",
                "bad",
                "bulk_job",
                "sink_test",
                "other"
            ]
        );
        assert_eq!(out[0]["verdict"], "transition");
        assert_eq!(out[0]["transitions"][0]["status"], "CREATED");
        assert_eq!(out[0]["transitions"][0]["origin"]["sequence_number"], "1");
        assert_eq!(out[1]["transitions"][0]["previous_status"], "CREATED");
        assert_eq!(
            out[1]["transitions"][0]["origin"]["sequence_number"], "3",
            "line numbers count the skipped line"
        );
        assert_eq!(
            out[2]["reason"],
            "not JSON: expected ident at line 1 column 2"
        );
        assert_eq!(out[2]["transitions"], Value::Array(vec![]));
        assert_eq!(out[3]["verdict"], "duplicate");
        assert!(out[3]["transitions"].as_array().unwrap().is_empty());
        assert!(out[4].get("reason").is_none() && out[4].get("verdict").is_none());
    }

    #[tokio::test]
    async fn raw_bytes_are_kept_and_an_oversized_line_is_bad_without_being_held() {
        let mut input = b"\xff\xfe\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 10));
        input.extend(b"\n");
        input.extend(job("e1", "QUEUED").as_bytes());
        let out = lines(&input).await;
        assert_eq!(out[0]["reason"], "not UTF-8 at byte 0");
        assert_eq!(
            out[1]["reason"],
            format!(
                "too large: {} bytes > {}",
                MAX_RECORD_BYTES + 10,
                MAX_RECORD_BYTES
            )
        );
        assert_eq!(
            out[2]["transitions"][0]["status"], "QUEUED",
            "a last line without newline counts"
        );
    }

    #[tokio::test]
    async fn state_dir_keeps_job_state_between_runs() {
        let dir = tempfile::tempdir().unwrap();
        let args = DecodeArgs {
            state_dir: Some(dir.path().to_owned()),
            ..DecodeArgs::default()
        };
        let run_once = |input: String| {
            let args = args.clone();
            async move {
                let tracker = Tracker::new(open_store(&args).unwrap(), DEFAULT_TERMINAL_TTL);
                let mut out = Vec::new();
                run_lines(&tracker, input.as_bytes(), &mut out)
                    .await
                    .unwrap();
                let v: Value = serde_json::from_slice(&out).unwrap();
                v
            }
        };
        let first = run_once(job("NO1", "QUEUED")).await;
        assert_eq!(first["transitions"][0]["status"], "QUEUED");
        // Same status, new event id, in a second run: the stored state
        // makes it a repeat rather than a first sighting.
        let second = run_once(job("NO2", "QUEUED")).await;
        assert_eq!(
            second["transitions"].as_array().unwrap().len(),
            0,
            "{second}"
        );
        let third = run_once(job("NO3", "COMPLETED")).await;
        assert_eq!(third["transitions"][0]["previous_status"], "QUEUED");
    }
}
