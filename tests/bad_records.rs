//! The record corpus: every kind of bad record the decoder rejects, each
//! with its exact dead-letter reason, and odd records it must still accept.
//!
//! - `tests/bad_records/NNN-name.bin`: bad records; `expected.toml` gives
//!   each file's class (`bad`) and exact reason.
//! - `tests/odd_records/NNN-name.bin`: unusual but good records (other
//!   event types, a sink test, `data` as a string, quirky
//!   `datacontenttype`, both schema versions, ...); `expected.toml` gives
//!   each file's class.
//!
//! Both corpora are written by `tests/bad_records/generate.py`. Each record
//! is checked twice: through the library's `decode`, and through
//! `bulkwatch decode --raw FILE...`, all files in one process, reading
//! each JSON output line's class and reason. One record is made here rather
//! than stored: the one over the size limit (1 MiB + 1 byte).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bulkwatch::decode::{Decoded, decode, limits::MAX_RECORD_BYTES};
use serde_json::Value;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    class: String,
    reason: Option<String>,
}

/// One record with what it must become.
struct Case {
    path: PathBuf,
    bytes: Vec<u8>,
    class: String,
    reason: Option<String>,
}

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// Reads a corpus directory, checking that the manifest and the files
/// match one to one (a record without an expectation, or the reverse, is a
/// mistake in the corpus, not something to skip).
fn load(name: &str) -> Vec<Case> {
    let dir = corpus_dir(name);
    let manifest = std::fs::read_to_string(dir.join("expected.toml"))
        .unwrap_or_else(|e| panic!("reading {}/expected.toml: {e}", dir.display()));
    let expected: BTreeMap<String, Expected> = toml::from_str(&manifest)
        .unwrap_or_else(|e| panic!("parsing {}/expected.toml: {e}", dir.display()));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".bin"))
        .collect();
    files.sort();
    let listed: Vec<&String> = expected.keys().collect();
    assert_eq!(
        files.iter().collect::<Vec<_>>(),
        listed,
        "the .bin files in {} and the tables of its expected.toml must match",
        dir.display()
    );
    expected
        .into_iter()
        .map(|(file, e)| {
            let path = dir.join(&file);
            Case {
                bytes: std::fs::read(&path).unwrap(),
                path,
                class: e.class,
                reason: e.reason,
            }
        })
        .collect()
}

fn bad_cases() -> Vec<Case> {
    let cases = load("bad_records");
    for c in &cases {
        assert_eq!(c.class, "bad", "{}", c.path.display());
        assert!(c.reason.is_some(), "{}: no reason", c.path.display());
    }
    cases
}

fn odd_cases() -> Vec<Case> {
    let cases = load("odd_records");
    for c in &cases {
        assert_ne!(c.class, "bad", "{}: odd records are good", c.path.display());
        assert!(c.reason.is_none(), "{}", c.path.display());
    }
    cases
}

/// What the library makes of a record: (class, reason).
fn library(bytes: &[u8]) -> (String, Option<String>) {
    let decoded = decode(bytes, None);
    let class = decoded.class().as_str().to_owned();
    match decoded {
        Decoded::Bad(e) => (class, Some(e.to_string())),
        _ => (class, None),
    }
}

fn too_large() -> Vec<u8> {
    // A real event padded with spaces: only its size is wrong.
    let mut bytes = std::fs::read(corpus_dir("odd_records").join("001-seed-as-documented.bin"))
        .expect("the seed record");
    bytes.resize(MAX_RECORD_BYTES + 1, b' ');
    bytes
}

fn too_large_reason() -> String {
    format!(
        "too large: {} bytes > {}",
        MAX_RECORD_BYTES + 1,
        MAX_RECORD_BYTES
    )
}

/// Checks every case, collecting all mismatches so that one run shows them
/// all.
fn check(cases: &[Case], got: impl Fn(&Case) -> (String, Option<String>)) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let (class, reason) = got(c);
        if class != c.class || reason != c.reason {
            failures.push(format!(
                "{}:\n    want class {:?} reason {:?}\n    got  class {class:?} reason {reason:?}",
                c.path.display(),
                c.class,
                c.reason
            ));
        }
    }
    failures
}

#[test]
fn the_corpus_has_at_least_50_kinds_of_bad_record() {
    let cases = bad_cases();
    // Count distinct problems, not files: the reason's shape with the
    // attribute or field named.
    let kinds: std::collections::BTreeSet<&str> =
        cases.iter().map(|c| c.reason.as_deref().unwrap()).collect();
    println!(
        "{} bad records, {} distinct reasons",
        cases.len(),
        kinds.len()
    );
    assert!(cases.len() >= 50, "only {} bad records", cases.len());
    assert!(kinds.len() >= 50, "only {} distinct reasons", kinds.len());
}

#[test]
fn every_bad_record_is_bad_with_its_exact_reason() {
    let cases = bad_cases();
    let failures = check(&cases, |c| library(&c.bytes));
    assert!(
        failures.is_empty(),
        "{} of {} records:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(
        library(&too_large()),
        ("bad".to_owned(), Some(too_large_reason()))
    );
}

#[test]
fn every_odd_record_is_good_and_of_its_class() {
    let cases = odd_cases();
    let failures = check(&cases, |c| library(&c.bytes));
    assert!(
        failures.is_empty(),
        "{} of {} records:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    for class in ["bulk_job", "sink_test", "other"] {
        assert!(
            cases.iter().any(|c| c.class == class),
            "no odd record of class {class}"
        );
    }
}

/// All records, bad and odd, through one `bulkwatch decode --raw` process.
#[test]
fn the_cli_gives_the_same_class_and_reason_for_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let large = dir.path().join("too-large.bin");
    std::fs::write(&large, too_large()).unwrap();
    let mut cases = bad_cases();
    cases.push(Case {
        path: large,
        bytes: Vec::new(),
        class: "bad".to_owned(),
        reason: Some(too_large_reason()),
    });
    cases.extend(odd_cases());

    let output = Command::new(env!("CARGO_BIN_EXE_bulkwatch"))
        .arg("decode")
        .arg("--raw")
        .args(cases.iter().map(|c| &c.path))
        .env("RUST_LOG", "warn")
        .output()
        .expect("running bulkwatch decode");
    assert!(
        output.status.success(),
        "bulkwatch decode failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), cases.len(), "one line per record:\n{stdout}");

    let by_path: BTreeMap<&Path, &Value> = cases
        .iter()
        .map(|c| c.path.as_path())
        .zip(lines.iter())
        .collect();
    let failures = check(&cases, |c| {
        let line = by_path[c.path.as_path()];
        (
            line["class"].as_str().unwrap_or("<none>").to_owned(),
            line.get("reason").map(|r| r.as_str().unwrap().to_owned()),
        )
    });
    assert!(
        failures.is_empty(),
        "{} of {} records:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Every odd bulk-job record is a job of its own, so each is a first
    // sighting: one transition, with its status.
    for (c, line) in cases.iter().zip(&lines) {
        let transitions = line["transitions"].as_array().unwrap();
        if c.class == "bulk_job" {
            assert_eq!(line["verdict"], "transition", "{}", c.path.display());
            assert_eq!(transitions.len(), 1, "{}", c.path.display());
        } else {
            assert!(transitions.is_empty(), "{}: {line}", c.path.display());
        }
    }
}
