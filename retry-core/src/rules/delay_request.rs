//! The delay service's requests: what a record's headers ask for, read and checked
//! without I/O, and the headers it is delivered with.
//!
//! | header | set by | value |
//! |---|---|---|
//! | `RetryDelay` | the sender | ISO-8601 duration: `PT1H`, `PT2S`, `PT1.400S` (human forms like `5s` are read too) |
//! | `RetryType` | the sender | `Linear` (default) or `Exponential` |
//! | `RetryMax` | the sender | deliveries before the record goes to `DLQTopic` (decimal, default 5) |
//! | `RetryTopic` | the sender | where to deliver it when due |
//! | `DLQTopic` | the sender | where it goes once `RetryCount` reaches `RetryMax` |
//! | `RetryCount` | the service | 0 on the first delivery; a record sent back with it gets the next number |
//! | `RetryTime` | the service | when it was due, RFC 3339 UTC with milliseconds |
//! | `RetryVia` | the service | the ladder tiers it waited on, e.g. `17s > 5s > 1s` |
//!
//! The delay of delivery *n* (`RetryCount` = n) is `RetryDelay × (n + 1)` for `Linear` and
//! `RetryDelay × 2ⁿ` for `Exponential`.

use std::time::Duration;

use crate::headers::is_framework_header;
use crate::topics::validate_topic_name;

/// Header names.
pub mod names {
    /// The base delay (ISO-8601 duration).
    pub const RETRY_DELAY: &str = "RetryDelay";
    /// `Linear` or `Exponential`.
    pub const RETRY_TYPE: &str = "RetryType";
    /// Deliveries before the DLQ.
    pub const RETRY_MAX: &str = "RetryMax";
    /// Where to deliver.
    pub const RETRY_TOPIC: &str = "RetryTopic";
    /// Where exhausted records go.
    pub const DLQ_TOPIC: &str = "DLQTopic";
    /// The delivery number, 0 first.
    pub const RETRY_COUNT: &str = "RetryCount";
    /// When the delivery was due.
    pub const RETRY_TIME: &str = "RetryTime";
    /// The ladder tiers waited on.
    pub const RETRY_VIA: &str = "RetryVia";
}

/// `RetryMax` when the header is missing.
pub const DEFAULT_MAX: u32 = 5;

/// How the delay grows with `RetryCount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryType {
    /// `RetryDelay × (RetryCount + 1)`.
    Linear,
    /// `RetryDelay × 2^RetryCount`.
    Exponential,
}

/// A request read from a record's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The base delay.
    pub delay: Duration,
    /// How it grows.
    pub kind: RetryType,
    /// Deliveries before the DLQ.
    pub max: u32,
    /// Where to deliver.
    pub retry_topic: String,
    /// Where exhausted records go, if set.
    pub dlq_topic: Option<String>,
    /// The number this delivery gets: 0 without a `RetryCount` header, else its value + 1.
    pub count: u32,
}

/// A header the service cannot act on; the record goes to the service's dead-letter topic
/// with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header `{header}` {problem}")]
pub struct RequestError {
    /// The header.
    pub header: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To `RetryTopic` once due.
    Deliver,
    /// `RetryCount` reached `RetryMax`: to `DLQTopic` now (`None`: the sender gave none).
    Exhausted(Option<String>),
}

/// Reads a request from `headers` (the last of a repeated name wins). `source` is the
/// request topic, which `RetryTopic` may not name (the record would loop).
pub fn read<'a, I>(headers: I, source: &str) -> Result<Request, RequestError>
where
    I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    let mut found: Vec<(&str, Option<&[u8]>)> = Vec::new();
    for (name, value) in headers {
        found.retain(|(n, _)| *n != name);
        found.push((name, value));
    }
    let text = |header: &'static str| -> Result<Option<&str>, RequestError> {
        match found.iter().find(|(n, _)| *n == header) {
            None | Some((_, None)) => Ok(None),
            Some((_, Some(v))) => {
                std::str::from_utf8(v).map(|s| Some(s.trim())).map_err(|_| RequestError { header, problem: "is not UTF-8".into() })
            }
        }
    };
    let required = |header: &'static str| -> Result<&str, RequestError> {
        text(header)?.filter(|s| !s.is_empty()).ok_or_else(|| RequestError { header, problem: "is missing".into() })
    };
    let number = |header: &'static str| -> Result<Option<u32>, RequestError> {
        text(header)?
            .map(|s| s.parse::<u32>().map_err(|_| RequestError { header, problem: format!("must be a whole number ≥ 0, got {s:?}") }))
            .transpose()
    };
    let topic = |header: &'static str, name: &str| -> Result<String, RequestError> {
        validate_topic_name(name).map_err(|e| RequestError { header, problem: format!("is not a valid topic: {e}") })?;
        if name == source {
            return Err(RequestError { header, problem: format!("names the request topic `{source}` itself (the record would loop)") });
        }
        Ok(name.to_owned())
    };

    let delay_text = required(names::RETRY_DELAY)?;
    let delay = crate::duration::parse_duration(delay_text)
        .map_err(|e| RequestError { header: names::RETRY_DELAY, problem: format!("is not a duration: {e}") })?;
    let kind = match text(names::RETRY_TYPE)? {
        None | Some("") => RetryType::Linear,
        Some(t) if t.eq_ignore_ascii_case("linear") => RetryType::Linear,
        Some(t) if t.eq_ignore_ascii_case("exponential") => RetryType::Exponential,
        Some(t) => return Err(RequestError { header: names::RETRY_TYPE, problem: format!("must be Linear or Exponential, got {t:?}") }),
    };
    let retry_topic = topic(names::RETRY_TOPIC, required(names::RETRY_TOPIC)?)?;
    let dlq_topic = match text(names::DLQ_TOPIC)?.filter(|s| !s.is_empty()) {
        Some(t) => Some(topic(names::DLQ_TOPIC, t)?),
        None => None,
    };
    Ok(Request {
        delay,
        kind,
        max: number(names::RETRY_MAX)?.unwrap_or(DEFAULT_MAX),
        retry_topic,
        dlq_topic,
        count: number(names::RETRY_COUNT)?.map_or(0, |n| n.saturating_add(1)),
    })
}

impl Request {
    /// Where it goes: delivered, or to the DLQ once the count reached the max.
    pub fn route(&self) -> Route {
        if self.count >= self.max {
            Route::Exhausted(self.dlq_topic.clone())
        } else {
            Route::Deliver
        }
    }

    /// The delay of this delivery, at most `cap`.
    pub fn backoff(&self, cap: Duration) -> Duration {
        let factor = match self.kind {
            RetryType::Linear => f64::from(self.count) + 1.0,
            RetryType::Exponential => 2f64.powi(i32::try_from(self.count).unwrap_or(i32::MAX)),
        };
        Duration::try_from_secs_f64(self.delay.as_secs_f64() * factor).unwrap_or(Duration::MAX).min(cap)
    }
}

/// The headers a request is delivered with: every header of the request in its order (the
/// framework's own `rt-*` headers and an earlier `RetryCount`/`RetryTime`/`RetryVia`
/// left out), then `RetryCount`, `RetryTime` and, if it waited on the ladder, `RetryVia`.
pub fn delivered_headers<'a, I>(headers: I, count: u32, retry_time_ms: i64, via: Option<&str>) -> Vec<(String, Option<Vec<u8>>)>
where
    I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    let replaced = [names::RETRY_COUNT, names::RETRY_TIME, names::RETRY_VIA];
    let mut out: Vec<(String, Option<Vec<u8>>)> = headers
        .into_iter()
        .filter(|(n, _)| !is_framework_header(n) && !replaced.contains(n))
        .map(|(n, v)| (n.to_owned(), v.map(<[u8]>::to_vec)))
        .collect();
    out.push((names::RETRY_COUNT.to_owned(), Some(count.to_string().into_bytes())));
    out.push((names::RETRY_TIME.to_owned(), Some(format_time(retry_time_ms).into_bytes())));
    if let Some(via) = via.filter(|v| !v.is_empty()) {
        out.push((names::RETRY_VIA.to_owned(), Some(via.as_bytes().to_vec())));
    }
    out
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T08:30:00.123Z`.
pub fn format_time(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Reads [`format_time`]'s output back, ms since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339(text.trim()).ok()?;
    i64::try_from(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&'static str, &str)]) -> Result<Request, RequestError> {
        read(pairs.iter().map(|(n, v)| (*n, Some(v.as_bytes()))), "retry.topic")
    }

    #[test]
    fn a_request_reads_with_its_defaults() {
        let r = req(&[("RetryDelay", "PT1.400S"), ("RetryTopic", "orders")]).unwrap();
        assert_eq!(
            r,
            Request {
                delay: Duration::from_millis(1_400),
                kind: RetryType::Linear,
                max: 5,
                retry_topic: "orders".into(),
                dlq_topic: None,
                count: 0
            }
        );
        let r = req(&[
            ("RetryDelay", "PT1H"),
            ("RetryType", "Exponential"),
            ("RetryMax", "3"),
            ("RetryTopic", "o"),
            ("DLQTopic", "o.dlq"),
            ("RetryCount", "1"),
        ])
        .unwrap();
        assert_eq!(
            (r.delay, r.kind, r.max, r.count, r.dlq_topic.as_deref()),
            (Duration::from_secs(3_600), RetryType::Exponential, 3, 2, Some("o.dlq"))
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        let header = |pairs: &[(&'static str, &str)]| req(pairs).unwrap_err().header;
        assert_eq!(header(&[("RetryTopic", "o")]), "RetryDelay");
        assert_eq!(header(&[("RetryDelay", "soon"), ("RetryTopic", "o")]), "RetryDelay");
        assert_eq!(header(&[("RetryDelay", "PT1S")]), "RetryTopic");
        assert_eq!(header(&[("RetryDelay", "PT1S"), ("RetryTopic", "a topic")]), "RetryTopic");
        assert_eq!(header(&[("RetryDelay", "PT1S"), ("RetryTopic", "retry.topic")]), "RetryTopic");
        assert_eq!(header(&[("RetryDelay", "PT1S"), ("RetryTopic", "o"), ("RetryType", "Cubic")]), "RetryType");
        assert_eq!(header(&[("RetryDelay", "PT1S"), ("RetryTopic", "o"), ("RetryMax", "-1")]), "RetryMax");
        assert_eq!(header(&[("RetryDelay", "PT1S"), ("RetryTopic", "o"), ("RetryCount", "x")]), "RetryCount");
        let bad_utf8 = read([("RetryDelay", Some(&[0xff_u8][..])), ("RetryTopic", Some(b"o".as_slice()))], "s").unwrap_err();
        assert_eq!(bad_utf8.problem, "is not UTF-8");
    }

    #[test]
    fn backoff_grows_by_type_and_is_capped() {
        let at = |kind, count| Request { delay: Duration::from_secs(2), kind, max: 5, retry_topic: "o".into(), dlq_topic: None, count };
        let cap = Duration::from_secs(3_600);
        let linear: Vec<u64> = (0..4).map(|n| at(RetryType::Linear, n).backoff(cap).as_secs()).collect();
        let exponential: Vec<u64> = (0..4).map(|n| at(RetryType::Exponential, n).backoff(cap).as_secs()).collect();
        assert_eq!(linear, [2, 4, 6, 8]);
        assert_eq!(exponential, [2, 4, 8, 16]);
        assert_eq!(at(RetryType::Exponential, u32::MAX).backoff(cap), cap);
    }

    #[test]
    fn exhausted_requests_go_to_the_dlq() {
        let r = req(&[("RetryDelay", "PT1S"), ("RetryTopic", "o"), ("RetryMax", "2"), ("RetryCount", "0"), ("DLQTopic", "d")]).unwrap();
        assert_eq!(r.route(), Route::Deliver);
        let r = req(&[("RetryDelay", "PT1S"), ("RetryTopic", "o"), ("RetryMax", "2"), ("RetryCount", "1"), ("DLQTopic", "d")]).unwrap();
        assert_eq!(r.route(), Route::Exhausted(Some("d".into())));
        let r = req(&[("RetryDelay", "PT1S"), ("RetryTopic", "o"), ("RetryMax", "0")]).unwrap();
        assert_eq!(r.route(), Route::Exhausted(None));
    }

    #[test]
    fn delivered_headers_keep_the_senders_and_replace_the_services() {
        let incoming: Vec<(&str, Option<&[u8]>)> = vec![
            ("traceparent", Some(b"00-abc")),
            ("RetryDelay", Some(b"PT2S")),
            ("RetryCount", Some(b"0")),
            ("rt-attempt", Some(&[0, 0, 0, 2])),
            ("RetryVia", Some(b"1s")),
            ("empty", None),
        ];
        let out = delivered_headers(incoming, 1, 1_700_000_000_123, Some("5s > 1s"));
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["traceparent", "RetryDelay", "empty", "RetryCount", "RetryTime", "RetryVia"]);
        assert_eq!(out[4].1.as_deref(), Some(b"2023-11-14T22:13:20.123Z".as_slice()));
        assert_eq!(parse_time("2023-11-14T22:13:20.123Z"), Some(1_700_000_000_123));
        assert_eq!(out[5].1.as_deref(), Some(b"5s > 1s".as_slice()));
    }
}
