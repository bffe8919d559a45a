//! The pure parts of serving a file over HTTP the way nginx does: request paths, ranges,
//! validators.

use percent_encoding::percent_decode_str;

/// Why a request path is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Not valid percent-encoding of UTF-8, or a NUL.
    Malformed,
    /// A `.` or `..` segment (after decoding): it would leave the site, or name no file.
    Escapes,
}

/// Decodes the path of a site request (what follows the site's root, without the query) into
/// the segments of a site path. `..` and `.` segments are refused, however they are encoded
/// (`%2e%2e`, `%2E.`); a doubly encoded one (`%252e%252e`) decodes once to the literal name
/// `%2e%2e`, which names no file. Backslashes are plain characters, as in a URL. Empty
/// segments (`a//b`) collapse as nginx's `merge_slashes` does. Returns the segments and whether
/// the path ended with `/`.
pub fn decode_path(raw: &str) -> Result<(Vec<String>, bool), PathError> {
    let dir = raw.is_empty() || raw.ends_with('/');
    let mut out = Vec::new();
    for seg in raw.split('/') {
        if seg.is_empty() {
            continue;
        }
        let s = percent_decode_str(seg).decode_utf8().map_err(|_| PathError::Malformed)?;
        if s.contains('\0') {
            return Err(PathError::Malformed);
        }
        if s == "." || s == ".." || s.contains('/') {
            return Err(PathError::Escapes);
        }
        out.push(s.into_owned());
    }
    Ok((out, dir))
}

/// A byte range to send: `start..end` (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAsk {
    /// The whole file (no header, an unsupported unit, several ranges, or a malformed header,
    /// which RFC 9110 says to ignore).
    Whole,
    /// One satisfiable range.
    Part(ByteRange),
    /// No satisfiable range: 416.
    Unsatisfiable,
}

/// Parses a `Range` header for a file of `len` bytes. One range is served (`bytes=a-b`,
/// `bytes=a-`, `bytes=-n`); a request for several gets the whole file, as nginx does when it
/// would not send multipart.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeAsk {
    let Some(h) = header else { return RangeAsk::Whole };
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return RangeAsk::Whole };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeAsk::Whole };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) { None } else { s.parse().ok() }
    };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeAsk::Whole,
        // The last n bytes.
        (true, false) => match num(b) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(n) if len == 0 => {
                let _ = n;
                RangeAsk::Unsatisfiable
            }
            Some(n) => RangeAsk::Part(ByteRange { start: len.saturating_sub(n), end: len }),
            None => RangeAsk::Whole,
        },
        (false, _) => {
            let Some(start) = num(a) else { return RangeAsk::Whole };
            let end = if b.is_empty() {
                len
            } else {
                match num(b) {
                    Some(e) if e >= start => e.saturating_add(1).min(len),
                    Some(_) => return RangeAsk::Whole,
                    None => return RangeAsk::Whole,
                }
            };
            if start >= len {
                RangeAsk::Unsatisfiable
            } else {
                RangeAsk::Part(ByteRange { start, end })
            }
        }
    }
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as for GET).
pub fn none_match(header: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    header.split(',').any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

/// Which encodings a client accepts: whether `Accept-Encoding` allows gzip (q > 0).
pub fn accepts_gzip(header: Option<&str>) -> bool {
    let Some(h) = header else { return false };
    h.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .find_map(|p| {
                p.trim().strip_prefix("q=").map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
            })
            .unwrap_or(1.0);
        (coding == "gzip" || coding == "x-gzip") && q > 0.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_and_never_escape() {
        assert_eq!(decode_path("").unwrap(), (vec![], true));
        assert_eq!(decode_path("a/b.html").unwrap(), (vec!["a".into(), "b.html".into()], false));
        assert_eq!(decode_path("a//b/").unwrap(), (vec!["a".into(), "b".into()], true));
        assert_eq!(decode_path("hello%20world.txt").unwrap().0, vec!["hello world.txt"]);
        for bad in ["..", "a/../b", "%2e%2e/x", "%2E%2e", ".%2e/etc/passwd", "a/./b", "a%2f..%2fb"]
        {
            assert_eq!(decode_path(bad), Err(PathError::Escapes), "{bad}");
        }
        assert_eq!(decode_path("%252e%252e").unwrap().0, vec!["%2e%2e"]);
        assert_eq!(decode_path("a%00b"), Err(PathError::Malformed));
        assert_eq!(decode_path("%ff%fe"), Err(PathError::Malformed));
        assert_eq!(decode_path("..%5c..%5cwin.ini").unwrap().0, vec!["..\\..\\win.ini"]);
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let p = |s, e| RangeAsk::Part(ByteRange { start: s, end: e });
        assert_eq!(parse_range(None, 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), p(0, 5));
        assert_eq!(parse_range(Some("bytes=5-"), 10), p(5, 10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), p(7, 10));
        assert_eq!(parse_range(Some("bytes=-30"), 10), p(0, 10));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), p(8, 10));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), RangeAsk::Whole);
    }

    #[test]
    fn validators_and_encodings() {
        assert!(none_match("\"abc\"", "\"abc\""));
        assert!(none_match("W/\"abc\", \"x\"", "\"abc\""));
        assert!(none_match("*", "\"abc\""));
        assert!(!none_match("\"abd\"", "\"abc\""));
        assert!(accepts_gzip(Some("gzip, deflate, br")));
        assert!(accepts_gzip(Some("br;q=1.0, gzip;q=0.5")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }
}
