//! The `Range` header of a blob download (RFC 9110 §14): one byte range, or none.
//!
//! Owns the parsing and the clamping to the blob's length. Invariants: no IO; any returned
//! range lies within `0..len`; a header we do not support (another unit, several ranges,
//! broken syntax) is ignored, so the whole blob is served, as RFC 9110 allows; only a
//! well-formed range that starts past the end is unsatisfiable (416).

/// What a download should serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The whole blob (no usable `Range`): 200.
    Whole,
    /// Bytes `start..=end` (inclusive, as in `Content-Range`): 206.
    Part {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// No byte of the blob is in the range: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// What `header` (the `Range` value, if any) asks of a blob of `len` bytes.
pub fn parse(header: Option<&[u8]>, len: u64) -> Served {
    let Some(spec) = header
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.trim().strip_prefix("bytes="))
    else {
        return Served::Whole;
    };
    if spec.contains(',') {
        return Served::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Served::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if first.is_empty() {
        // `bytes=-n`: the last n bytes.
        return match number(last) {
            None => Served::Whole,
            Some(0) => Served::Unsatisfiable,
            Some(_) if len == 0 => Served::Unsatisfiable,
            Some(n) => Served::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        };
    }
    // `bytes=a-` and `bytes=a-b`.
    let Some(start) = number(first) else {
        return Served::Whole;
    };
    let end = if last.is_empty() {
        None
    } else {
        match number(last) {
            Some(end) if end >= start => Some(end),
            _ => return Served::Whole,
        }
    };
    if start >= len {
        return Served::Unsatisfiable;
    }
    Served::Part {
        start,
        end: end.map_or(len - 1, |end| end.min(len - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(h: &str, len: u64) -> Served {
        parse(Some(h.as_bytes()), len)
    }

    fn part(start: u64, end: u64) -> Served {
        Served::Part { start, end }
    }

    #[test]
    fn single_ranges_are_clamped_to_the_blob() {
        assert_eq!(p("bytes=0-9", 100), part(0, 9));
        assert_eq!(p("bytes=90-200", 100), part(90, 99));
        assert_eq!(p("bytes=50-", 100), part(50, 99));
        assert_eq!(p("bytes=-10", 100), part(90, 99));
        assert_eq!(p("bytes=-1000", 100), part(0, 99));
        assert_eq!(p("bytes=99-99", 100), part(99, 99));
    }

    #[test]
    fn past_the_end_is_unsatisfiable() {
        assert_eq!(p("bytes=100-", 100), Served::Unsatisfiable);
        assert_eq!(p("bytes=100-200", 100), Served::Unsatisfiable);
        assert_eq!(p("bytes=-0", 100), Served::Unsatisfiable);
    }

    #[test]
    fn anything_else_serves_the_whole_blob() {
        assert_eq!(parse(None, 100), Served::Whole);
        for h in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=x-",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(p(h, 100), Served::Whole, "{h}");
        }
    }
}
