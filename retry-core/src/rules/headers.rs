//! The retry headers: a fixed set, **replaced on every hop, never appended**.
//!
//! | header | encoding | bytes |
//! |---|---|---|
//! | `rt-version` | u8 | 1 |
//! | `rt-attempt` | u32 big-endian; the attempt the record is *due for* (2 = first retry) | 4 |
//! | `rt-due-at` | i64 big-endian, ms since the Unix epoch | 8 |
//! | `rt-original-topic` | UTF-8 | len |
//! | `rt-original-partition` | i32 big-endian | 4 |
//! | `rt-original-offset` | i64 big-endian | 8 |
//! | `rt-original-timestamp` | i64 big-endian ms, -1 when the source record had none | 8 |
//! | `rt-first-failure-at` | i64 big-endian ms | 8 |
//! | `rt-group` | UTF-8 | len |
//! | `rt-error-kind` | UTF-8: `retryable`, `fatal`, `decode`, `exhausted`, `timed-out`, `malformed-headers`, `publish-failed` | ≤ 17 |
//! | `rt-error` | UTF-8, cut at [`MAX_ERROR_BYTES`] on a character boundary | ≤ 512 |
//! | `rt-hop-due` | only on a [ladder](crate::ladder) tier: i64 big-endian ms, when the record leaves the tier | 8 |
//! | `rt-hop-path` | only on a ladder tier: the tiers visited, one byte each, the latest [`MAX_PATH`](crate::ladder::MAX_PATH) | ≤ 16 |
//!
//! Every header whose name starts with [`PREFIX`] belongs to the framework: [`replace`]
//! drops all of them and writes one fresh set, so a record's size does not grow with its
//! attempt count, and user headers pass through untouched, in order, exactly once.

/// Prefix of every framework header.
pub const PREFIX: &str = "rt-";
/// Current header format version.
pub const FORMAT_VERSION: u8 = 1;
/// Upper bound of the `rt-error` header in bytes.
pub const MAX_ERROR_BYTES: usize = 512;
/// The most framework headers one record carries: the eleven of every retry, and the two
/// of a ladder tier.
pub const MAX_FRAMEWORK_HEADERS: usize = 13;

/// Header names.
pub mod names {
    /// Format version.
    pub const VERSION: &str = "rt-version";
    /// Attempt number the record is due for.
    pub const ATTEMPT: &str = "rt-attempt";
    /// Due time, ms since the epoch.
    pub const DUE_AT: &str = "rt-due-at";
    /// Topic of the original record.
    pub const ORIGINAL_TOPIC: &str = "rt-original-topic";
    /// Partition of the original record.
    pub const ORIGINAL_PARTITION: &str = "rt-original-partition";
    /// Offset of the original record.
    pub const ORIGINAL_OFFSET: &str = "rt-original-offset";
    /// Timestamp of the original record.
    pub const ORIGINAL_TIMESTAMP: &str = "rt-original-timestamp";
    /// Time of the first failure.
    pub const FIRST_FAILURE_AT: &str = "rt-first-failure-at";
    /// Consumer group that failed the record.
    pub const GROUP: &str = "rt-group";
    /// Kind of the last failure.
    pub const ERROR_KIND: &str = "rt-error-kind";
    /// Text of the last error.
    pub const ERROR: &str = "rt-error";
    /// When the record leaves its ladder tier, ms since the epoch.
    pub const HOP_DUE: &str = "rt-hop-due";
    /// The ladder tiers the record visited, one index per byte.
    pub const HOP_PATH: &str = "rt-hop-path";
    /// How many times the record was replayed from a DLT (decimal text). Not part of the
    /// retry set: it travels with the record like a user header, replaced on each replay.
    pub const REPLAYED: &str = "rt-replayed";
}

/// Why a record failed, or why it reached the DLT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The handler failed and said a retry may help.
    Retryable,
    /// The handler failed and said a retry cannot help.
    Fatal,
    /// The payload could not be deserialized.
    Decode,
    /// Every attempt failed.
    Exhausted,
    /// The policy's global timeout ran out.
    TimedOut,
    /// The retry headers could not be trusted.
    MalformedHeaders,
    /// Republishing to the retry topic can never succeed (e.g. the record is too large for
    /// the broker once the retry headers are added), so it went to the DLT instead.
    PublishFailed,
}

impl FailureKind {
    /// The header text.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Retryable => "retryable",
            FailureKind::Fatal => "fatal",
            FailureKind::Decode => "decode",
            FailureKind::Exhausted => "exhausted",
            FailureKind::TimedOut => "timed-out",
            FailureKind::MalformedHeaders => "malformed-headers",
            FailureKind::PublishFailed => "publish-failed",
        }
    }

    /// Reads the header text.
    pub fn parse(text: &str) -> Option<Self> {
        [
            FailureKind::Retryable,
            FailureKind::Fatal,
            FailureKind::Decode,
            FailureKind::Exhausted,
            FailureKind::TimedOut,
            FailureKind::MalformedHeaders,
            FailureKind::PublishFailed,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decoded retry headers of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryHeaders {
    /// The attempt this record is due for (2 = first retry).
    pub attempt: u32,
    /// When the attempt is due, ms since the epoch.
    pub due_at_ms: i64,
    /// Topic of the original record.
    pub original_topic: String,
    /// Partition of the original record.
    pub original_partition: i32,
    /// Offset of the original record.
    pub original_offset: i64,
    /// Timestamp of the original record, if it had one.
    pub original_timestamp_ms: Option<i64>,
    /// When the record first failed, ms since the epoch.
    pub first_failure_ms: i64,
    /// The consumer group.
    pub group: String,
    /// Kind of the last failure.
    pub error_kind: FailureKind,
    /// Text of the last error (at most [`MAX_ERROR_BYTES`]).
    pub error: String,
    /// On a ladder tier: when it leaves the tier and the tiers visited.
    pub hop: Option<Hop>,
}

/// Where a record stands on the [ladder](crate::ladder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// When it leaves its tier, ms since the epoch (never after the record's due time).
    pub leave_at_ms: i64,
    /// The tiers visited, by index, the latest [`MAX_PATH`](crate::ladder::MAX_PATH).
    pub path: Vec<u8>,
}

/// A retry header that is missing or cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retry header `{header}` {problem}")]
pub struct HeaderError {
    /// The header.
    pub header: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The retry set's header names, in table order (a name's index is its slot in decoding).
const RETRY_SET: [&str; MAX_FRAMEWORK_HEADERS] = [
    names::VERSION,
    names::ATTEMPT,
    names::DUE_AT,
    names::ORIGINAL_TOPIC,
    names::ORIGINAL_PARTITION,
    names::ORIGINAL_OFFSET,
    names::ORIGINAL_TIMESTAMP,
    names::FIRST_FAILURE_AT,
    names::GROUP,
    names::ERROR_KIND,
    names::ERROR,
    names::HOP_DUE,
    names::HOP_PATH,
];

fn slot_of(name: &str) -> Option<usize> {
    RETRY_SET.iter().position(|n| *n == name)
}

/// Whether `name` is a framework header of the retry set (the replay marker is not).
pub fn is_framework_header(name: &str) -> bool {
    name.starts_with(PREFIX) && name != names::REPLAYED
}

/// The headers of a record replayed from a DLT: the user's headers in their order (every
/// framework header and the old replay marker dropped), the marker `rt-replayed` counting
/// this replay (one header, whatever the number of replays), then `fresh` retry headers if
/// the record goes to a retry topic (none for a source topic: a fresh first attempt).
pub fn for_replay<'a, I>(headers: I, fresh: Option<&RetryHeaders>) -> Vec<(String, Option<Vec<u8>>)>
where
    I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    let mut replays: u32 = 0;
    let mut out: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for (name, value) in headers {
        if name == names::REPLAYED {
            replays = value.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok()).unwrap_or(replays);
        } else if !is_framework_header(name) {
            out.push((name.to_owned(), value.map(<[u8]>::to_vec)));
        }
    }
    out.push((names::REPLAYED.to_owned(), Some(replays.saturating_add(1).to_string().into_bytes())));
    if let Some(h) = fresh {
        out.extend(h.encode().into_iter().map(|(n, v)| (n.to_owned(), Some(v))));
    }
    out
}

impl RetryHeaders {
    /// Encodes the fixed header set, in table order.
    pub fn encode(&self) -> Vec<(&'static str, Vec<u8>)> {
        self.fold_encoded(Vec::with_capacity(MAX_FRAMEWORK_HEADERS), |mut headers, name, value| {
            headers.push((name, value.to_vec()));
            headers
        })
    }

    /// Folds the encoded header set, in table order, into `init` without allocating a
    /// value (as the producer copies each one anyway).
    pub fn fold_encoded<T>(&self, init: T, mut f: impl FnMut(T, &'static str, &[u8]) -> T) -> T {
        let mut acc = f(init, names::VERSION, &[FORMAT_VERSION]);
        acc = f(acc, names::ATTEMPT, &self.attempt.to_be_bytes());
        acc = f(acc, names::DUE_AT, &self.due_at_ms.to_be_bytes());
        acc = f(acc, names::ORIGINAL_TOPIC, self.original_topic.as_bytes());
        acc = f(acc, names::ORIGINAL_PARTITION, &self.original_partition.to_be_bytes());
        acc = f(acc, names::ORIGINAL_OFFSET, &self.original_offset.to_be_bytes());
        acc = f(acc, names::ORIGINAL_TIMESTAMP, &self.original_timestamp_ms.unwrap_or(-1).to_be_bytes());
        acc = f(acc, names::FIRST_FAILURE_AT, &self.first_failure_ms.to_be_bytes());
        acc = f(acc, names::GROUP, self.group.as_bytes());
        acc = f(acc, names::ERROR_KIND, self.error_kind.as_str().as_bytes());
        acc = f(acc, names::ERROR, truncate_utf8(&self.error, MAX_ERROR_BYTES).as_bytes());
        if let Some(hop) = &self.hop {
            let keep = hop.path.len().saturating_sub(crate::ladder::MAX_PATH);
            acc = f(acc, names::HOP_DUE, &hop.leave_at_ms.to_be_bytes());
            acc = f(acc, names::HOP_PATH, &hop.path[keep..]);
        }
        acc
    }

    /// Decodes the framework headers among `headers` (name, value; the last of a repeated
    /// name wins, as with Kafka's `lastHeader`).
    ///
    /// `Ok(None)`: no framework header at all (a record that never failed).
    /// `Err`: some are there but one is missing or unreadable; the error names it.
    pub fn decode<'a, I>(headers: I) -> Result<Option<RetryHeaders>, HeaderError>
    where
        I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    {
        // One slot per header of the set (the last of a repeated name wins): linear in the
        // number of headers whatever their names, and no allocation.
        let mut slots: [Option<Option<&[u8]>>; MAX_FRAMEWORK_HEADERS] = [None; MAX_FRAMEWORK_HEADERS];
        let mut any = false;
        for (name, value) in headers {
            if is_framework_header(name) {
                any = true;
                if let Some(i) = slot_of(name) {
                    slots[i] = Some(value);
                }
            }
        }
        if !any {
            return Ok(None);
        }
        let found = |header: &'static str| slot_of(header).and_then(|i| slots[i]);
        let get = |header: &'static str| -> Result<&[u8], HeaderError> {
            match found(header) {
                Some(Some(v)) => Ok(v),
                Some(None) => Err(HeaderError { header, problem: "has no value".into() }),
                None => Err(HeaderError { header, problem: "is missing".into() }),
            }
        };
        fn fixed<const N: usize>(header: &'static str, v: &[u8]) -> Result<[u8; N], HeaderError> {
            v.try_into().map_err(|_| HeaderError { header, problem: format!("must be {N} bytes (big-endian), got {}", v.len()) })
        }
        let str = |header: &'static str| -> Result<&str, HeaderError> {
            std::str::from_utf8(get(header)?).map_err(|_| HeaderError { header, problem: "is not UTF-8".into() })
        };
        let text = |header: &'static str| str(header).map(str::to_owned);

        let version = fixed::<1>(names::VERSION, get(names::VERSION)?)?[0];
        if version != FORMAT_VERSION {
            return Err(HeaderError {
                header: names::VERSION,
                problem: format!("is {version}; this build reads version {FORMAT_VERSION}"),
            });
        }
        let attempt = u32::from_be_bytes(fixed(names::ATTEMPT, get(names::ATTEMPT)?)?);
        let kind_text = str(names::ERROR_KIND)?;
        let error_kind = FailureKind::parse(kind_text)
            .ok_or_else(|| HeaderError { header: names::ERROR_KIND, problem: format!("has unknown value {kind_text:?}") })?;
        let timestamp = i64::from_be_bytes(fixed(names::ORIGINAL_TIMESTAMP, get(names::ORIGINAL_TIMESTAMP)?)?);
        let hop = match found(names::HOP_DUE).is_some() {
            false => None,
            true => {
                let path = get(names::HOP_PATH)?;
                if path.len() > crate::ladder::MAX_PATH {
                    return Err(HeaderError {
                        header: names::HOP_PATH,
                        problem: format!("is {} bytes, at most {} expected", path.len(), crate::ladder::MAX_PATH),
                    });
                }
                Some(Hop { leave_at_ms: i64::from_be_bytes(fixed(names::HOP_DUE, get(names::HOP_DUE)?)?), path: path.to_vec() })
            }
        };
        Ok(Some(RetryHeaders {
            attempt,
            due_at_ms: i64::from_be_bytes(fixed(names::DUE_AT, get(names::DUE_AT)?)?),
            original_topic: text(names::ORIGINAL_TOPIC)?,
            original_partition: i32::from_be_bytes(fixed(names::ORIGINAL_PARTITION, get(names::ORIGINAL_PARTITION)?)?),
            original_offset: i64::from_be_bytes(fixed(names::ORIGINAL_OFFSET, get(names::ORIGINAL_OFFSET)?)?),
            original_timestamp_ms: (timestamp >= 0).then_some(timestamp),
            first_failure_ms: i64::from_be_bytes(fixed(names::FIRST_FAILURE_AT, get(names::FIRST_FAILURE_AT)?)?),
            group: text(names::GROUP)?,
            error_kind,
            error: text(names::ERROR)?,
            hop,
        }))
    }
}

/// The headers of a republished record: the user's headers in their order (every framework
/// header dropped), then one fresh framework set.
pub fn replace<'a, I>(user: I, retry: &RetryHeaders) -> Vec<(String, Option<Vec<u8>>)>
where
    I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    let mut out: Vec<(String, Option<Vec<u8>>)> = user
        .into_iter()
        .filter(|(name, _)| !is_framework_header(name))
        .map(|(name, value)| (name.to_owned(), value.map(<[u8]>::to_vec)))
        .collect();
    out.extend(retry.encode().into_iter().map(|(n, v)| (n.to_owned(), Some(v))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_replay_keeps_user_headers_and_one_bounded_marker() {
        let h = sample();
        let dead = replace([("traceparent", Some(b"abc".as_slice()))], &h);
        let borrowed = |hs: &[(String, Option<Vec<u8>>)]| hs.iter().map(|(n, v)| (n.clone(), v.clone())).collect::<Vec<_>>();
        let once = for_replay(dead.iter().map(|(n, v)| (n.as_str(), v.as_deref())), None);
        assert_eq!(borrowed(&once), [("traceparent".to_owned(), Some(b"abc".to_vec())), (names::REPLAYED.to_owned(), Some(b"1".to_vec()))]);
        assert_eq!(RetryHeaders::decode(once.iter().map(|(n, v)| (n.as_str(), v.as_deref()))), Ok(None), "a fresh first attempt");
        let mut again = once;
        for _ in 0..99 {
            again = for_replay(again.iter().map(|(n, v)| (n.as_str(), v.as_deref())), Some(&h));
        }
        assert_eq!(again.iter().filter(|(n, _)| n == names::REPLAYED).count(), 1);
        assert!(again.contains(&(names::REPLAYED.to_owned(), Some(b"100".to_vec()))));
        assert_eq!(RetryHeaders::decode(again.iter().map(|(n, v)| (n.as_str(), v.as_deref()))), Ok(Some(h)));
    }

    fn sample() -> RetryHeaders {
        RetryHeaders {
            attempt: 2,
            due_at_ms: 1_700_000_005_000,
            original_topic: "weather-forecast".into(),
            original_partition: 3,
            original_offset: 42,
            original_timestamp_ms: Some(1_700_000_000_000),
            first_failure_ms: 1_700_000_000_100,
            group: "my-listener-group".into(),
            error_kind: FailureKind::Retryable,
            error: "store unavailable".into(),
            hop: None,
        }
    }

    fn as_refs(h: &[(String, Option<Vec<u8>>)]) -> Vec<(&str, Option<&[u8]>)> {
        h.iter().map(|(n, v)| (n.as_str(), v.as_deref())).collect()
    }

    fn size(h: &[(String, Option<Vec<u8>>)]) -> usize {
        h.iter().map(|(n, v)| n.len() + v.as_ref().map_or(0, Vec::len)).sum()
    }

    #[test]
    fn every_header_round_trips_on_its_own_field() {
        // Each field gets a distinct value, so a codec that wrote one field's value into
        // another header (arroyo's offset-in-partition bug) cannot pass.
        let h = RetryHeaders {
            attempt: 7,
            due_at_ms: 11,
            original_topic: "t13".into(),
            original_partition: 17,
            original_offset: 19,
            original_timestamp_ms: Some(23),
            first_failure_ms: 29,
            group: "g31".into(),
            error_kind: FailureKind::Fatal,
            error: "e37".into(),
            hop: None,
        };
        let encoded = h.encode();
        let get = |n: &str| encoded.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(get(names::ATTEMPT), 7u32.to_be_bytes());
        assert_eq!(get(names::DUE_AT), 11i64.to_be_bytes());
        assert_eq!(get(names::ORIGINAL_PARTITION), 17i32.to_be_bytes());
        assert_eq!(get(names::ORIGINAL_OFFSET), 19i64.to_be_bytes());
        assert_eq!(get(names::ORIGINAL_TIMESTAMP), 23i64.to_be_bytes());
        assert_eq!(get(names::FIRST_FAILURE_AT), 29i64.to_be_bytes());
        let pairs = encoded.iter().map(|(n, v)| (*n, Some(v.as_slice())));
        assert_eq!(RetryHeaders::decode(pairs).unwrap(), Some(h));
    }

    #[test]
    fn no_framework_headers_means_none() {
        let user = [("trace-id", Some(&b"abc"[..])), ("kafka_dlt-exception", None)];
        assert_eq!(RetryHeaders::decode(user), Ok(None));
    }

    #[test]
    fn replace_never_appends_and_keeps_user_headers_once() {
        let user: Vec<(String, Option<Vec<u8>>)> = vec![
            ("trace-id".into(), Some(b"abc".to_vec())),
            ("retry_topic-attempts".into(), Some(vec![0, 0, 0, 1])),
            ("empty".into(), None),
        ];
        let mut h = sample();
        let mut current = replace(as_refs(&user), &h);
        let size_at_2 = size(&current);
        for attempt in 3..=1000 {
            h.attempt = attempt;
            h.due_at_ms += 300_000;
            current = replace(as_refs(&current), &h);
            assert_eq!(size(&current), size_at_2, "attempt {attempt}");
        }
        assert_eq!(&current[..3], &user[..]);
        assert_eq!(current.len(), user.len() + 11);
        assert_eq!(RetryHeaders::decode(as_refs(&current)).unwrap().unwrap().attempt, 1000);
    }

    #[test]
    fn ladder_hops_keep_the_headers_bounded() {
        let mut h = sample();
        h.hop = Some(Hop { leave_at_ms: 1, path: vec![6] });
        let first = size(&replace([], &h));
        assert_eq!(h.encode().iter().map(|(n, _)| *n).collect::<Vec<_>>(), RETRY_SET, "decoding's slots follow the encoding");
        for i in 0..100 {
            let path = crate::ladder::extend_path(&h.hop.as_ref().unwrap().path, i % 7);
            h.hop = Some(Hop { leave_at_ms: i as i64, path });
            let current = replace([], &h);
            assert!(size(&current) <= first + crate::ladder::MAX_PATH, "hop {i}");
            assert_eq!(RetryHeaders::decode(as_refs(&current)).unwrap().unwrap(), h);
        }
        let mut long = h.encode();
        long.retain(|(n, _)| *n != names::HOP_PATH);
        long.push((names::HOP_PATH, vec![0; 40]));
        assert!(RetryHeaders::decode(long.iter().map(|(n, v)| (*n, Some(v.as_slice())))).unwrap_err().problem.contains("at most"));
    }

    #[test]
    fn error_text_is_bounded_on_a_char_boundary() {
        let mut h = sample();
        h.error = "é".repeat(1000);
        let decoded = RetryHeaders::decode(h.encode().iter().map(|(n, v)| (*n, Some(v.as_slice())))).unwrap().unwrap();
        assert!(decoded.error.len() <= MAX_ERROR_BYTES);
        assert_eq!(decoded.error, "é".repeat(MAX_ERROR_BYTES / 2));
    }

    #[test]
    fn malformed_headers_are_named() {
        let good = sample().encode();
        let with = |name: &str, value: Option<&[u8]>| {
            let mut v: Vec<(&str, Option<&[u8]>)> =
                good.iter().filter(|(n, _)| *n != name).map(|(n, v)| (*n, Some(v.as_slice()))).collect();
            v.push((name, value));
            RetryHeaders::decode(v).unwrap_err()
        };
        assert_eq!(with(names::ATTEMPT, Some(b"abc")).header, names::ATTEMPT);
        assert!(with(names::DUE_AT, Some(b"garbage!!")).problem.contains("8 bytes"));
        assert!(with(names::GROUP, Some(&[0xff, 0xfe])).problem.contains("UTF-8"));
        assert!(with(names::VERSION, Some(&[9])).problem.contains("version"));
        assert!(with(names::ERROR_KIND, Some(b"boom")).problem.contains("unknown"));
        assert!(with(names::ORIGINAL_OFFSET, None).problem.contains("no value"));
        let only_attempt = [(names::ATTEMPT, Some(&[0u8, 0, 0, 2][..]))];
        assert_eq!(RetryHeaders::decode(only_attempt).unwrap_err().problem, "is missing");
    }

    #[test]
    fn a_repeated_framework_header_reads_as_its_last_value() {
        let mut pairs: Vec<(&str, Option<Vec<u8>>)> = sample().encode().into_iter().map(|(n, v)| (n, Some(v))).collect();
        pairs.insert(0, (names::ATTEMPT, Some(99u32.to_be_bytes().to_vec())));
        let refs = pairs.iter().map(|(n, v)| (*n, v.as_deref()));
        assert_eq!(RetryHeaders::decode(refs).unwrap().unwrap().attempt, 2);
    }

    fn kind() -> impl Strategy<Value = FailureKind> {
        prop_oneof![
            Just(FailureKind::Retryable),
            Just(FailureKind::Fatal),
            Just(FailureKind::Decode),
            Just(FailureKind::Exhausted),
            Just(FailureKind::TimedOut),
            Just(FailureKind::MalformedHeaders),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(attempt: u32, due: i64, topic in "[a-z.-]{1,40}", partition: i32, offset: i64,
                      ts in proptest::option::of(0i64..), first: i64, group in "\\PC{0,40}",
                      kind in kind(), error in "\\PC{0,300}",
                      hop in proptest::option::of((any::<i64>(), proptest::collection::vec(any::<u8>(), 0..=crate::ladder::MAX_PATH)))) {
            let hop = hop.map(|(leave_at_ms, path)| Hop { leave_at_ms, path });
            let h = RetryHeaders { attempt, due_at_ms: due, original_topic: topic, original_partition: partition,
                original_offset: offset, original_timestamp_ms: ts, first_failure_ms: first, group, error_kind: kind, error, hop };
            let enc = h.encode();
            let decoded = RetryHeaders::decode(enc.iter().map(|(n, v)| (*n, Some(v.as_slice())))).unwrap().unwrap();
            let expected = RetryHeaders { error: truncate_utf8(&h.error, MAX_ERROR_BYTES).to_owned(), ..h };
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn decode_never_panics(pairs in proptest::collection::vec(("rt-[a-z-]{0,20}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12))), 0..14)) {
            let _ = RetryHeaders::decode(pairs.iter().map(|(n, v)| (n.as_str(), v.as_deref())));
        }

        #[test]
        fn kind_text_round_trips(k in kind()) {
            prop_assert_eq!(FailureKind::parse(k.as_str()), Some(k));
        }
    }
}
