//! Client configuration: the framework's defaults, the user's overrides, and redaction of
//! secrets wherever configuration is logged or shown.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

use crate::error::{ConfigError, Error};

/// Key fragments whose values are never shown.
const SECRET_MARKERS: &[&str] = &["password", "secret", "jaas", "token", "key.pem", "ssl.key", "credentials", "oauthbearer.config"];

/// Whether the value of `key` must be hidden.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|m| key.contains(m))
}

/// librdkafka properties as key/value pairs; [`Display`](fmt::Display) and
/// [`Debug`](fmt::Debug) redact secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaConfig {
    entries: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets `key` to `value` (later settings win).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.entries.insert(key.into(), value.into());
        self
    }
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }
    /// Every setting, in key order (secrets included: for building clients, not printing).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// `other`'s settings on top of these.
    #[must_use]
    pub fn merged(&self, other: &KafkaConfig) -> KafkaConfig {
        let mut out = self.clone();
        out.entries.extend(other.entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }
    /// The settings, secrets masked as `[redacted]`.
    pub fn redacted(&self) -> Vec<(String, String)> {
        self.entries.iter().map(|(k, v)| (k.clone(), if is_secret(k) { "[redacted]".to_owned() } else { v.clone() })).collect()
    }
    /// The settings as an rdkafka `ClientConfig`, to build clients of your own.
    pub fn to_client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.entries {
            c.set(k, v);
        }
        c
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for KafkaConfig {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut c = KafkaConfig::new();
        for (k, v) in iter {
            c.set(k, v);
        }
        c
    }
}

impl fmt::Display for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.redacted().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(" "))
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

/// Turns a client-creation failure into an error naming the offending setting.
pub(crate) fn client_error(what: &str, e: KafkaError) -> Error {
    let (setting, msg) = match &e {
        // Rejected by `rd_kafka_conf_set`: librdkafka names the key.
        KafkaError::ClientConfig(_, desc, key, _value) => (key.clone(), desc.clone()),
        // librdkafka: `No such configuration property: "x"` / `Invalid value "v" for configuration property "x"`.
        KafkaError::ClientCreation(msg) => {
            let setting = msg
                .rsplit_once("property")
                .map(|(_, rest)| rest.trim_start_matches(':').trim().trim_matches('"').to_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| what.to_owned());
            (setting, msg.clone())
        }
        _ => return Error::kafka(format!("creating the {what}"), e),
    };
    // librdkafka may echo the offending value; never show it for a secret.
    let reason = if is_secret(&setting) { format!("invalid value for `{setting}` (value redacted)") } else { msg };
    Error::Config(ConfigError::new(setting, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let c: KafkaConfig = [
            ("bootstrap.servers", "b:9092"),
            ("sasl.password", "hunter2"),
            ("sasl.jaas.config", "user=\"u\" password=\"hunter2\""),
            ("ssl.key.password", "hunter2"),
            ("sasl.oauthbearer.client.secret", "hunter2"),
        ]
        .into_iter()
        .collect();
        for shown in [c.to_string(), format!("{c:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("b:9092"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }

    #[test]
    fn later_settings_win() {
        let base: KafkaConfig = [("a", "1"), ("b", "1")].into_iter().collect();
        let over: KafkaConfig = [("b", "2")].into_iter().collect();
        let m = base.merged(&over);
        assert_eq!((m.get("a"), m.get("b")), (Some("1"), Some("2")));
    }
}
