//! The delay headers a producer sets and the ones a delivered record carries, and how a
//! record's due time follows from them. Pure functions: the produce path and the delay log
//! scan (at start-up and when far entries are paged in) compute due times with the same code,
//! so a record's due time never depends on when it was computed.

use rill_storage::records::Headers;

/// Absolute due time: epoch milliseconds as decimal text. A fixed, user-facing name.
pub const DELIVER_AT: &[u8] = b"rill-deliver-at";
/// Relative due time: milliseconds after the broker stored the record, decimal text.
pub const DELAY_MS: &[u8] = b"rill-delay-ms";
/// A delayed record's cancellation id, set by the producer (1 to [`ID_MAX_BYTES`] bytes).
/// Only records that carry one can be cancelled.
pub const DELAY_ID: &[u8] = b"rill-delay-id";
/// Cancels the waiting records of the same partition whose `rill-delay-id` equals this
/// header's value and that were stored before it. A cancel record is stored in the delay log
/// and never delivered.
pub const CANCEL: &[u8] = b"rill-delay-cancel";
/// Longest `rill-delay-id` / `rill-delay-cancel` value (pending cancels are held in memory).
pub const ID_MAX_BYTES: usize = 256;
/// Added at delivery: the producer's record timestamp (epoch ms, decimal text).
pub const PRODUCE_TIMESTAMP: &[u8] = b"rill-delayed-produce-timestamp";
/// Added at delivery: the due time the record was delivered for (epoch ms, decimal text).
pub const DELIVERED_FOR: &[u8] = b"rill-delayed-deliver-at";
/// Added at delivery: where the record waited, `<delay log offset>.<record index>`; with
/// `rill-delayed-deliver-at` it is the delivery cursor the broker recovers after a crash.
pub const SOURCE: &[u8] = b"rill-delayed-source";

/// What a record asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// No delay header: due when stored (an ordinary record, delivered at once).
    None,
    /// `rill-deliver-at`: due at this epoch millisecond (at once if already past).
    At(i64),
    /// `rill-delay-ms`: due this many milliseconds after it was stored.
    After(i64),
    /// `rill-delay-cancel`: not a record to deliver; cancels earlier waiting records with the
    /// id it names ([`cancel_id_of`]).
    Cancel,
}

/// Why a record's delay headers are refused (the produce answers INVALID_RECORD with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelayError {
    #[error("record {index}: header {header} is not decimal text: {value:?}")]
    NotDecimal {
        index: u32,
        header: &'static str,
        value: String,
    },
    #[error("record {index}: header {header} appears more than once")]
    Repeated { index: u32, header: &'static str },
    #[error("record {index}: both rill-deliver-at and rill-delay-ms are set")]
    Both { index: u32 },
    #[error("record {index}: rill-delay-cancel cannot be combined with a delay header")]
    CancelWithDelay { index: u32 },
    #[error("record {index}: header {header} must be 1 to 256 bytes, not null or {len} bytes")]
    BadId {
        index: u32,
        header: &'static str,
        len: usize,
    },
    #[error("record {index}: rill-delay-ms is negative ({delay_ms})")]
    Negative { index: u32, delay_ms: i64 },
    #[error(
        "record {index}: delay of {delay_ms} ms is beyond rill.delivery.delay.max.ms ({max_ms})"
    )]
    TooFar {
        index: u32,
        delay_ms: i64,
        max_ms: i64,
    },
}

/// Longest header value read as a number: an i64 has at most 19 digits and a sign.
const DECIMAL_MAX_LEN: usize = 20;

/// Reads the delay headers of record `index`.
///
/// # Errors
/// A value that is null, empty, not ASCII decimal (an optional leading `-`), out of range, a
/// header given twice, both headers, or a negative delay.
pub fn request_of(index: u32, headers: Headers<'_>) -> Result<Request, DelayError> {
    let mut at = None;
    let mut after = None;
    let mut cancel = false;
    let mut id = false;
    for (key, value) in headers.iter() {
        if key == CANCEL || key == DELAY_ID {
            let (seen, name) = if key == CANCEL {
                (&mut cancel, "rill-delay-cancel")
            } else {
                (&mut id, "rill-delay-id")
            };
            if std::mem::replace(seen, true) {
                return Err(DelayError::Repeated {
                    index,
                    header: name,
                });
            }
            check_id(index, name, value)?;
            continue;
        }
        let (slot, name) = if key == DELIVER_AT {
            (&mut at, "rill-deliver-at")
        } else if key == DELAY_MS {
            (&mut after, "rill-delay-ms")
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(DelayError::Repeated {
                index,
                header: name,
            });
        }
        *slot = Some(decimal(index, name, value)?);
    }
    if cancel {
        return match (at, after) {
            (None, None) => Ok(Request::Cancel),
            _ => Err(DelayError::CancelWithDelay { index }),
        };
    }
    match (at, after) {
        (Some(_), Some(_)) => Err(DelayError::Both { index }),
        (Some(t), None) => Ok(Request::At(t)),
        (None, Some(d)) if d < 0 => Err(DelayError::Negative { index, delay_ms: d }),
        (None, Some(d)) => Ok(Request::After(d)),
        (None, None) => Ok(Request::None),
    }
}

fn check_id(index: u32, header: &'static str, value: Option<&[u8]>) -> Result<(), DelayError> {
    match value {
        Some(v) if !v.is_empty() && v.len() <= ID_MAX_BYTES => Ok(()),
        _ => Err(DelayError::BadId {
            index,
            header,
            len: value.map_or(0, <[u8]>::len),
        }),
    }
}

/// The `rill-delay-id` of a record (checked at produce by [`request_of`]).
pub fn id_of(headers: Headers<'_>) -> Option<&[u8]> {
    headers
        .iter()
        .find(|(k, _)| *k == DELAY_ID)
        .and_then(|(_, v)| v)
}

/// The id a cancel record names (checked at produce by [`request_of`]).
pub fn cancel_id_of(headers: Headers<'_>) -> Option<&[u8]> {
    headers
        .iter()
        .find(|(k, _)| *k == CANCEL)
        .and_then(|(_, v)| v)
}

fn decimal(index: u32, header: &'static str, value: Option<&[u8]>) -> Result<i64, DelayError> {
    let bad = || DelayError::NotDecimal {
        index,
        header,
        value: value
            .map(|v| String::from_utf8_lossy(&v[..v.len().min(64)]).into_owned())
            .unwrap_or_else(|| "null".to_string()),
    };
    let v = value.ok_or_else(bad)?;
    if v.is_empty() || v.len() > DECIMAL_MAX_LEN {
        return Err(bad());
    }
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(bad)
}

/// Refuses a request further away than `max_ms` from `now_ms` (a past `rill-deliver-at` is
/// fine: it is delivered at once).
pub fn check_max(index: u32, request: Request, now_ms: i64, max_ms: i64) -> Result<(), DelayError> {
    let delay_ms = match request {
        Request::None | Request::Cancel => return Ok(()),
        Request::At(t) => t.saturating_sub(now_ms),
        Request::After(d) => d,
    };
    if delay_ms > max_ms {
        return Err(DelayError::TooFar {
            index,
            delay_ms,
            max_ms,
        });
    }
    Ok(())
}

/// The due time of a record stored at `stored_ms` (its delay log batch's append time). Never
/// before `stored_ms`: a past time means "at once".
pub fn due_ms(request: Request, stored_ms: i64) -> i64 {
    match request {
        Request::None | Request::Cancel => stored_ms,
        Request::At(t) => t.max(stored_ms),
        Request::After(d) => stored_ms.saturating_add(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&[u8], Option<&[u8]>)]) -> Result<Request, DelayError> {
        let mut raw = Vec::new();
        let encoded = Headers::encode(headers, &mut raw);
        request_of(7, encoded)
    }

    #[test]
    fn reads_either_header_and_ignores_others() {
        assert_eq!(request(&[]), Ok(Request::None));
        assert_eq!(
            request(&[(b"x", Some(b"1")), (DELAY_MS, Some(b"30000"))]),
            Ok(Request::After(30_000))
        );
        assert_eq!(
            request(&[(DELIVER_AT, Some(b"1700000000000"))]),
            Ok(Request::At(1_700_000_000_000))
        );
        assert_eq!(request(&[(DELIVER_AT, Some(b"-5"))]), Ok(Request::At(-5)));
    }

    #[test]
    fn refuses_garbage_with_the_record_and_header_named() {
        for bad in [
            &b""[..],
            b"abc",
            b"12a",
            b" 12",
            b"+12",
            b"-",
            b"1.5",
            b"99999999999999999999",
        ] {
            match request(&[(DELAY_MS, Some(bad))]) {
                Err(e @ DelayError::NotDecimal { index: 7, .. }) => {
                    assert!(e.to_string().contains("rill-delay-ms"), "{e}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            request(&[(DELIVER_AT, None)]),
            Err(DelayError::NotDecimal { .. })
        ));
        assert_eq!(
            request(&[(DELAY_MS, Some(b"1")), (DELAY_MS, Some(b"2"))]),
            Err(DelayError::Repeated {
                index: 7,
                header: "rill-delay-ms"
            })
        );
        assert_eq!(
            request(&[(DELAY_MS, Some(b"1")), (DELIVER_AT, Some(b"2"))]),
            Err(DelayError::Both { index: 7 })
        );
        assert_eq!(
            request(&[(DELAY_MS, Some(b"-1"))]),
            Err(DelayError::Negative {
                index: 7,
                delay_ms: -1
            })
        );
    }

    #[test]
    fn cancel_and_id_headers_are_checked() {
        assert_eq!(request(&[(CANCEL, Some(b"order-1"))]), Ok(Request::Cancel));
        assert_eq!(
            request(&[(DELAY_ID, Some(b"order-1")), (DELAY_MS, Some(b"5"))]),
            Ok(Request::After(5))
        );
        assert_eq!(
            request(&[(CANCEL, Some(b"x")), (DELAY_MS, Some(b"5"))]),
            Err(DelayError::CancelWithDelay { index: 7 })
        );
        assert_eq!(
            request(&[(CANCEL, Some(b"x")), (CANCEL, Some(b"y"))]),
            Err(DelayError::Repeated {
                index: 7,
                header: "rill-delay-cancel"
            })
        );
        let long = vec![b'a'; ID_MAX_BYTES + 1];
        for bad in [None, Some(&b""[..]), Some(&long[..])] {
            assert!(matches!(
                request(&[(DELAY_ID, bad)]),
                Err(DelayError::BadId { index: 7, .. })
            ));
            assert!(matches!(
                request(&[(CANCEL, bad)]),
                Err(DelayError::BadId { index: 7, .. })
            ));
        }
        let mut raw = Vec::new();
        let h = Headers::encode(&[(b"a", None), (CANCEL, Some(b"id-9"))], &mut raw);
        assert_eq!(cancel_id_of(h), Some(&b"id-9"[..]));
        assert_eq!(id_of(h), None);
    }

    #[test]
    fn the_maximum_bounds_both_forms_and_past_times_are_due_at_once() {
        let max = 1000;
        assert!(check_max(0, Request::After(1000), 50, max).is_ok());
        assert!(check_max(0, Request::After(1001), 50, max).is_err());
        assert!(check_max(0, Request::At(1050), 50, max).is_ok());
        assert!(check_max(0, Request::At(1051), 50, max).is_err());
        assert!(check_max(0, Request::At(i64::MIN), 50, max).is_ok());
        assert_eq!(due_ms(Request::At(10), 50), 50);
        assert_eq!(due_ms(Request::At(90), 50), 90);
        assert_eq!(due_ms(Request::After(5), 50), 55);
        assert_eq!(due_ms(Request::None, 50), 50);
        assert_eq!(due_ms(Request::After(i64::MAX), 50), i64::MAX);
    }
}
