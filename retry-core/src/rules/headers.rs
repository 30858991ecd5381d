//! The retry headers: a fixed set, **replaced on every hop, never appended**.
//!
//! Format 2, written by default: two headers.
//!
//! | header | encoding | bytes |
//! |---|---|---|
//! | `rt-retry` | every field but the error text, packed (below) | 44 + topic + group (+ 9 + path on a ladder tier) |
//! | `rt-error` | UTF-8, cut at [`MAX_ERROR_BYTES`] on a character boundary | ≤ 512 |
//!
//! `rt-retry`, integers big-endian: u8 version (2), u32 attempt the record is *due for*
//! (2 = first retry), i64 due time (ms since the Unix epoch), i32 original partition, i64
//! original offset, i64 original timestamp (ms, -1 when the source record had none), i64
//! first failure (ms), u8 [error kind](FailureKind::code), u16 length + UTF-8 original
//! topic, u16 length + UTF-8 consumer group; on a [ladder](crate::ladder) tier then i64
//! when the record leaves the tier (ms) and u8 length + the tiers visited, one byte each,
//! the latest [`MAX_PATH`](crate::ladder::MAX_PATH).
//!
//! librdkafka allocates and copies every header on each side of the broker: producing
//! 20,000 records with format 1's eleven headers took it nearly twice the CPU of four
//! headers. The error text stays a header of its own, readable by any tool.
//!
//! Format 1 (this crate's 0.1; [`HeaderFormat::PerField`]) is still read, and can still be
//! written for a rolling upgrade, while older instances that read only it share a group:
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
/// The header format version written by default ([`HeaderFormat::Packed`]).
pub const FORMAT_VERSION: u8 = 2;
/// The version of the one-header-per-field format ([`HeaderFormat::PerField`]).
pub const PER_FIELD_VERSION: u8 = 1;
/// Upper bound of the `rt-error` header in bytes.
pub const MAX_ERROR_BYTES: usize = 512;
/// The most framework headers one record carries: in format 1, the eleven of every retry
/// and the two of a ladder tier (format 2 writes two).
pub const MAX_FRAMEWORK_HEADERS: usize = 13;

/// How the retry headers are written. Both are always read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderFormat {
    /// Format 2: `rt-retry` (every field but the error, packed) and `rt-error`.
    #[default]
    Packed,
    /// Format 1: one header per field, eleven (thirteen on a ladder tier), as this crate's
    /// 0.1 wrote and read them. For a rolling upgrade: write it until no instance of the
    /// group reads only format 1.
    PerField,
}

impl HeaderFormat {
    /// Every format by its name in configuration and on the command line.
    pub const NAMES: [(&'static str, HeaderFormat); 2] = [("packed", HeaderFormat::Packed), ("per_field", HeaderFormat::PerField)];
}

/// Header names.
pub mod names {
    /// Format 2: every field but the error text, packed.
    pub const RETRY: &str = "rt-retry";
    /// Format 1: format version.
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

    /// Every kind, in the order of their [codes](FailureKind::code).
    const ALL: [FailureKind; 7] = [
        FailureKind::Retryable,
        FailureKind::Fatal,
        FailureKind::Decode,
        FailureKind::Exhausted,
        FailureKind::TimedOut,
        FailureKind::MalformedHeaders,
        FailureKind::PublishFailed,
    ];

    /// Reads the header text.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Its one-byte code in format 2: 0 `retryable`, 1 `fatal`, 2 `decode`, 3 `exhausted`,
    /// 4 `timed-out`, 5 `malformed-headers`, 6 `publish-failed`.
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|k| *k == self).expect("every kind is listed") as u8
    }

    /// Reads a [`code`](FailureKind::code).
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
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

/// The framework's header names, format 1's in table order then format 2's packed one (a
/// name's index is its slot in decoding).
const RETRY_SET: [&str; MAX_FRAMEWORK_HEADERS + 1] = [
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
    names::RETRY,
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
/// this replay (one header, whatever the number of replays), then `fresh` retry headers in
/// their format if the record goes to a retry topic (none for a source topic: a fresh first
/// attempt).
pub fn for_replay<'a, I>(headers: I, fresh: Option<(&RetryHeaders, HeaderFormat)>) -> Vec<(String, Option<Vec<u8>>)>
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
    if let Some((h, format)) = fresh {
        out.extend(h.encode_as(format).into_iter().map(|(n, v)| (n.to_owned(), Some(v))));
    }
    out
}

impl RetryHeaders {
    /// Encodes the header set in the default format ([`HeaderFormat::Packed`]).
    pub fn encode(&self) -> Vec<(&'static str, Vec<u8>)> {
        self.encode_as(HeaderFormat::default())
    }

    /// Encodes the header set in `format`, in table order.
    pub fn encode_as(&self, format: HeaderFormat) -> Vec<(&'static str, Vec<u8>)> {
        self.fold_encoded(format, Vec::with_capacity(MAX_FRAMEWORK_HEADERS), |mut headers, name, value| {
            headers.push((name, value.to_vec()));
            headers
        })
    }

    /// Folds the encoded header set, in table order, into `init` (as the producer copies
    /// each value anyway, format 1 allocates none, format 2 one).
    pub fn fold_encoded<T>(&self, format: HeaderFormat, init: T, mut f: impl FnMut(T, &'static str, &[u8]) -> T) -> T {
        let error = truncate_utf8(&self.error, MAX_ERROR_BYTES).as_bytes();
        match format {
            HeaderFormat::Packed => {
                let acc = f(init, names::RETRY, &self.packed());
                f(acc, names::ERROR, error)
            }
            HeaderFormat::PerField => {
                let mut acc = f(init, names::VERSION, &[PER_FIELD_VERSION]);
                acc = f(acc, names::ATTEMPT, &self.attempt.to_be_bytes());
                acc = f(acc, names::DUE_AT, &self.due_at_ms.to_be_bytes());
                acc = f(acc, names::ORIGINAL_TOPIC, self.original_topic.as_bytes());
                acc = f(acc, names::ORIGINAL_PARTITION, &self.original_partition.to_be_bytes());
                acc = f(acc, names::ORIGINAL_OFFSET, &self.original_offset.to_be_bytes());
                acc = f(acc, names::ORIGINAL_TIMESTAMP, &self.original_timestamp_ms.unwrap_or(-1).to_be_bytes());
                acc = f(acc, names::FIRST_FAILURE_AT, &self.first_failure_ms.to_be_bytes());
                acc = f(acc, names::GROUP, self.group.as_bytes());
                acc = f(acc, names::ERROR_KIND, self.error_kind.as_str().as_bytes());
                acc = f(acc, names::ERROR, error);
                if let Some(hop) = &self.hop {
                    acc = f(acc, names::HOP_DUE, &hop.leave_at_ms.to_be_bytes());
                    acc = f(acc, names::HOP_PATH, hop.kept_path());
                }
                acc
            }
        }
    }

    /// The value of `rt-retry` (format 2). A topic or group name longer than a u16 can say
    /// is cut (Kafka allows 249 bytes for a topic; a group that long is not one anybody
    /// runs), on a character boundary.
    fn packed(&self) -> Vec<u8> {
        let topic = truncate_utf8(&self.original_topic, usize::from(u16::MAX)).as_bytes();
        let group = truncate_utf8(&self.group, usize::from(u16::MAX)).as_bytes();
        let mut v =
            Vec::with_capacity(PACKED_FIXED + topic.len() + group.len() + self.hop.as_ref().map_or(0, |_| 9 + crate::ladder::MAX_PATH));
        v.push(FORMAT_VERSION);
        v.extend_from_slice(&self.attempt.to_be_bytes());
        v.extend_from_slice(&self.due_at_ms.to_be_bytes());
        v.extend_from_slice(&self.original_partition.to_be_bytes());
        v.extend_from_slice(&self.original_offset.to_be_bytes());
        v.extend_from_slice(&self.original_timestamp_ms.unwrap_or(-1).to_be_bytes());
        v.extend_from_slice(&self.first_failure_ms.to_be_bytes());
        v.push(self.error_kind.code());
        for text in [topic, group] {
            v.extend_from_slice(&(text.len() as u16).to_be_bytes());
            v.extend_from_slice(text);
        }
        if let Some(hop) = &self.hop {
            let path = hop.kept_path();
            v.extend_from_slice(&hop.leave_at_ms.to_be_bytes());
            v.push(path.len() as u8);
            v.extend_from_slice(path);
        }
        v
    }

    /// Decodes the framework headers among `headers` (name, value; the last of a repeated
    /// name wins, as with Kafka's `lastHeader`), in either format (a record carrying both
    /// is read by its `rt-retry`).
    ///
    /// `Ok(None)`: no framework header at all (a record that never failed).
    /// `Err`: some are there but one is missing or unreadable; the error names it.
    pub fn decode<'a, I>(headers: I) -> Result<Option<RetryHeaders>, HeaderError>
    where
        I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    {
        // One slot per header of the set (the last of a repeated name wins): linear in the
        // number of headers whatever their names, and no allocation.
        let mut slots: [Option<Option<&[u8]>>; RETRY_SET.len()] = [None; RETRY_SET.len()];
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
        let str = |header: &'static str| -> Result<&str, HeaderError> {
            std::str::from_utf8(get(header)?).map_err(|_| HeaderError { header, problem: "is not UTF-8".into() })
        };
        let text = |header: &'static str| str(header).map(str::to_owned);
        if found(names::RETRY).is_some() {
            return Packed::new(get(names::RETRY)?).read(text(names::ERROR)?).map(Some);
        }
        fn fixed<const N: usize>(header: &'static str, v: &[u8]) -> Result<[u8; N], HeaderError> {
            v.try_into().map_err(|_| HeaderError { header, problem: format!("must be {N} bytes (big-endian), got {}", v.len()) })
        }

        let version = fixed::<1>(names::VERSION, get(names::VERSION)?)?[0];
        if version != PER_FIELD_VERSION {
            return Err(HeaderError {
                header: names::VERSION,
                problem: format!(
                    "is {version}; this build reads version {PER_FIELD_VERSION} here (and {FORMAT_VERSION} in `{}`)",
                    names::RETRY
                ),
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
                check_path(names::HOP_PATH, path.len())?;
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

impl Hop {
    /// The path as written: the latest [`MAX_PATH`](crate::ladder::MAX_PATH) tiers.
    fn kept_path(&self) -> &[u8] {
        &self.path[self.path.len().saturating_sub(crate::ladder::MAX_PATH)..]
    }
}

fn check_path(header: &'static str, len: usize) -> Result<(), HeaderError> {
    if len > crate::ladder::MAX_PATH {
        return Err(HeaderError {
            header,
            problem: format!("has a tier path of {len} bytes, at most {} expected", crate::ladder::MAX_PATH),
        });
    }
    Ok(())
}

/// Bytes of `rt-retry` before its topic and group: version, attempt, due, partition,
/// offset, timestamp, first failure, error kind, and the two lengths.
const PACKED_FIXED: usize = 1 + 4 + 8 + 4 + 8 + 8 + 8 + 1 + 2 + 2;

/// Reads `rt-retry` front to back; every problem names the header and what is wrong.
struct Packed<'a> {
    rest: &'a [u8],
}

impl<'a> Packed<'a> {
    fn new(value: &'a [u8]) -> Self {
        Packed { rest: value }
    }

    fn problem(problem: String) -> HeaderError {
        HeaderError { header: names::RETRY, problem }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], HeaderError> {
        if self.rest.len() < n {
            return Err(Self::problem(format!("ends before its {what} ({} bytes left, {n} needed)", self.rest.len())));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], HeaderError> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn text(&mut self, what: &str) -> Result<String, HeaderError> {
        let len = u16::from_be_bytes(self.array(what)?);
        let bytes = self.take(usize::from(len), what)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| Self::problem(format!("has a {what} that is not UTF-8")))
    }

    fn read(mut self, error: String) -> Result<RetryHeaders, HeaderError> {
        let [version] = self.array("version")?;
        if version != FORMAT_VERSION {
            return Err(Self::problem(format!("is version {version}; this build reads version {FORMAT_VERSION} here")));
        }
        let attempt = u32::from_be_bytes(self.array("attempt")?);
        let due_at_ms = i64::from_be_bytes(self.array("due time")?);
        let original_partition = i32::from_be_bytes(self.array("original partition")?);
        let original_offset = i64::from_be_bytes(self.array("original offset")?);
        let timestamp = i64::from_be_bytes(self.array("original timestamp")?);
        let first_failure_ms = i64::from_be_bytes(self.array("first failure")?);
        let [code] = self.array("error kind")?;
        let error_kind = FailureKind::from_code(code).ok_or_else(|| Self::problem(format!("has unknown error kind code {code}")))?;
        let original_topic = self.text("original topic")?;
        let group = self.text("group")?;
        let hop = match self.rest.is_empty() {
            true => None,
            false => {
                let leave_at_ms = i64::from_be_bytes(self.array("tier leaving time")?);
                let [len] = self.array("tier path")?;
                check_path(names::RETRY, usize::from(len))?;
                Some(Hop { leave_at_ms, path: self.take(usize::from(len), "tier path")?.to_vec() })
            }
        };
        if !self.rest.is_empty() {
            return Err(Self::problem(format!("has {} bytes after its fields", self.rest.len())));
        }
        Ok(RetryHeaders {
            attempt,
            due_at_ms,
            original_topic,
            original_partition,
            original_offset,
            original_timestamp_ms: (timestamp >= 0).then_some(timestamp),
            first_failure_ms,
            group,
            error_kind,
            error,
            hop,
        })
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
            again = for_replay(again.iter().map(|(n, v)| (n.as_str(), v.as_deref())), Some((&h, HeaderFormat::Packed)));
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
        let encoded = h.encode_as(HeaderFormat::PerField);
        let get = |n: &str| encoded.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(get(names::ATTEMPT), 7u32.to_be_bytes());
        assert_eq!(get(names::DUE_AT), 11i64.to_be_bytes());
        assert_eq!(get(names::ORIGINAL_PARTITION), 17i32.to_be_bytes());
        assert_eq!(get(names::ORIGINAL_OFFSET), 19i64.to_be_bytes());
        assert_eq!(get(names::ORIGINAL_TIMESTAMP), 23i64.to_be_bytes());
        assert_eq!(get(names::FIRST_FAILURE_AT), 29i64.to_be_bytes());
        let pairs = encoded.iter().map(|(n, v)| (*n, Some(v.as_slice())));
        assert_eq!(RetryHeaders::decode(pairs).unwrap(), Some(h.clone()));
        let packed = h.encode();
        assert_eq!(packed.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [names::RETRY, names::ERROR]);
        let value = &packed[0].1;
        assert_eq!(value.len(), PACKED_FIXED + 3 + 3);
        assert_eq!(value[0], FORMAT_VERSION);
        assert_eq!(value[1..5], 7u32.to_be_bytes());
        assert_eq!(value[5..13], 11i64.to_be_bytes());
        assert_eq!(value[13..17], 17i32.to_be_bytes());
        assert_eq!(value[17..25], 19i64.to_be_bytes());
        assert_eq!(value[25..33], 23i64.to_be_bytes());
        assert_eq!(value[33..41], 29i64.to_be_bytes());
        assert_eq!(value[41], FailureKind::Fatal.code());
        assert_eq!(value[42..47], *b"\0\x03t13");
        assert_eq!(value[47..], *b"\0\x03g31");
        assert_eq!(packed[1].1, b"e37");
        let pairs = packed.iter().map(|(n, v)| (*n, Some(v.as_slice())));
        assert_eq!(RetryHeaders::decode(pairs).unwrap(), Some(h));
    }

    #[test]
    fn format_2_is_read_before_format_1_and_kind_codes_round_trip() {
        let mut old = sample();
        old.attempt = 5;
        let both: Vec<(&str, Vec<u8>)> = old.encode_as(HeaderFormat::PerField).into_iter().chain(sample().encode()).collect();
        let decoded = RetryHeaders::decode(both.iter().map(|(n, v)| (*n, Some(v.as_slice())))).unwrap().unwrap();
        assert_eq!(decoded.attempt, 2);
        for k in FailureKind::ALL {
            assert_eq!(FailureKind::from_code(k.code()), Some(k));
        }
        assert_eq!(FailureKind::from_code(7), None);
    }

    #[test]
    fn a_garbled_packed_header_is_named_with_its_problem() {
        let good = sample().encode();
        let packed = good[0].1.clone();
        let decode = |value: Option<&[u8]>, error: Option<&[u8]>| {
            let mut v: Vec<(&str, Option<&[u8]>)> = vec![(names::RETRY, value)];
            if let Some(e) = error {
                v.push((names::ERROR, Some(e)));
            }
            RetryHeaders::decode(v).unwrap_err()
        };
        let problem = |value: &[u8]| decode(Some(value), Some(b"e"));
        assert_eq!(problem(&packed[..3]).header, names::RETRY);
        assert!(problem(&packed[..3]).problem.contains("before its attempt"), "{}", problem(&packed[..3]));
        assert!(problem(&packed[..packed.len() - 1]).problem.contains("group"));
        let mut version = packed.clone();
        version[0] = 9;
        assert!(problem(&version).problem.contains("version 9"));
        let mut kind = packed.clone();
        kind[41] = 200;
        assert!(problem(&kind).problem.contains("error kind code 200"));
        let mut topic = packed.clone();
        topic[44] = 0xff;
        assert!(problem(&topic).problem.contains("not UTF-8"));
        let mut long = packed.clone();
        long.extend_from_slice(&[0; 8]);
        long.push(40);
        assert!(problem(&long).problem.contains("at most"));
        let mut tail = packed.clone();
        tail.extend_from_slice(&[0; 8]);
        tail.extend_from_slice(&[1, 5, 9, 9]);
        assert!(problem(&tail).problem.contains("2 bytes after"));
        assert_eq!(decode(None, Some(b"e")).problem, "has no value");
        assert_eq!(decode(Some(&packed), None), HeaderError { header: names::ERROR, problem: "is missing".into() });
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
        assert_eq!(current.len(), user.len() + 2);
        assert_eq!(RetryHeaders::decode(as_refs(&current)).unwrap().unwrap().attempt, 1000);
    }

    #[test]
    fn ladder_hops_keep_the_headers_bounded() {
        let mut h = sample();
        h.hop = Some(Hop { leave_at_ms: 1, path: vec![6] });
        let first = size(&replace([], &h));
        let per_field = |h: &RetryHeaders| h.encode_as(HeaderFormat::PerField);
        let first_per_field = per_field(&h).iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        assert_eq!(per_field(&h).iter().map(|(n, _)| *n).collect::<Vec<_>>(), RETRY_SET[..13], "decoding's slots follow the encoding");
        for i in 0..100 {
            let path = crate::ladder::extend_path(&h.hop.as_ref().unwrap().path, i % 7);
            h.hop = Some(Hop { leave_at_ms: i as i64, path });
            let current = replace([], &h);
            assert!(size(&current) <= first + crate::ladder::MAX_PATH, "hop {i}");
            assert_eq!(RetryHeaders::decode(as_refs(&current)).unwrap().unwrap(), h);
            let old = per_field(&h);
            assert!(old.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() <= first_per_field + crate::ladder::MAX_PATH, "hop {i}");
            assert_eq!(RetryHeaders::decode(old.iter().map(|(n, v)| (*n, Some(v.as_slice())))).unwrap().unwrap(), h);
        }
        let mut long = per_field(&h);
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
        let good = sample().encode_as(HeaderFormat::PerField);
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
            Just(FailureKind::PublishFailed),
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
            let expected = RetryHeaders { error: truncate_utf8(&h.error, MAX_ERROR_BYTES).to_owned(), ..h.clone() };
            for format in [HeaderFormat::Packed, HeaderFormat::PerField] {
                let enc = h.encode_as(format);
                let decoded = RetryHeaders::decode(enc.iter().map(|(n, v)| (*n, Some(v.as_slice())))).unwrap().unwrap();
                prop_assert_eq!(&decoded, &expected);
            }
        }

        #[test]
        fn decoding_any_packed_value_never_panics(value in proptest::collection::vec(any::<u8>(), 0..120), cut in 0usize..120) {
            let mut value = value;
            let good = sample().encode();
            if cut % 2 == 0 {
                // Mostly a well-formed start, so the reader gets past the fixed fields.
                value = good[0].1.iter().copied().take(cut).chain(value).collect();
            }
            let _ = RetryHeaders::decode([(names::RETRY, Some(value.as_slice())), (names::ERROR, Some(b"e".as_slice()))]);
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
