//! Bounds on what one record may cost, checked before parsing.
//!
//! - Size: at most [`MAX_RECORD_BYTES`] (1 MiB, Kinesis' own record limit),
//!   so anything larger did not come from Kinesis and is refused unread.
//! - Depth: at most [`MAX_DEPTH`] nested arrays/objects (the top-level
//!   object is depth 1). A real event is 3 deep. serde_json has its own
//!   recursion limit of 128 which already keeps the stack safe; our lower
//!   limit is checked first so that the reason is precise ("nested too
//!   deeply") and the slow diagnostic path, which builds a
//!   `serde_json::Value`, never builds a deep tree.

use super::DecodeError;

/// Kinesis' maximum record payload.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Maximum nesting of arrays and objects, the envelope object counting 1.
pub const MAX_DEPTH: usize = 32;

/// The longest `data.job_sid` accepted, in bytes. Twilio's SIDs are 34
/// characters ("JW" and 32 hex digits); the margin allows for a change of
/// format, while a sid of kilobytes is garbage that would otherwise become
/// a key in the job store (DynamoDB allows 2,048 bytes) and live there
/// forever.
pub const MAX_JOB_SID_BYTES: usize = 128;

/// Fails if `json`, found `outer` levels deep inside another document
/// (0 for a whole record), nests arrays/objects deeper than `limit` in all.
///
/// Fast path: nesting deeper than `limit` needs more than `limit` opening
/// brackets, and counting bytes vectorizes well, so a typical event (four
/// `{`) never runs the exact scan.
pub fn check_depth(json: &[u8], outer: usize, limit: usize) -> Result<(), DecodeError> {
    let openers = json.iter().filter(|&&b| b == b'{' || b == b'[').count();
    if outer + openers <= limit {
        return Ok(());
    }
    // Exact scan: brackets inside strings do not count. Malformed JSON is
    // left to the parser; this only has to be right for the depth.
    let mut depth = outer;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return Err(DecodeError::TooDeep { limit });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("{}{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn depth_at_the_limit_passes_and_one_more_fails() {
        assert!(check_depth(nested(MAX_DEPTH).as_bytes(), 0, MAX_DEPTH).is_ok());
        assert_eq!(
            check_depth(nested(MAX_DEPTH + 1).as_bytes(), 0, MAX_DEPTH),
            Err(DecodeError::TooDeep { limit: MAX_DEPTH })
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let s = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert!(check_depth(s.as_bytes(), 0, MAX_DEPTH).is_ok());
    }

    #[test]
    fn outer_depth_counts() {
        assert!(check_depth(nested(MAX_DEPTH - 1).as_bytes(), 1, MAX_DEPTH).is_ok());
        assert_eq!(
            check_depth(nested(MAX_DEPTH).as_bytes(), 1, MAX_DEPTH),
            Err(DecodeError::TooDeep { limit: MAX_DEPTH })
        );
    }

    #[test]
    fn many_siblings_are_not_depth() {
        let s = format!("[{}]", vec!["[]"; 1000].join(","));
        assert!(check_depth(s.as_bytes(), 0, MAX_DEPTH).is_ok());
    }
}
