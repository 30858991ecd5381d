use retryable_topic::{retryable_topic, HandlerError};
#[retryable_topic(topics = ["ok", "not ok"], group = "g", attempts = 0, backoff = "soon", jitter = 2.0, partitions = 3)]
async fn h(v: serde_json::Value) -> Result<(), HandlerError> { let _ = v; Ok(()) }
fn main() {}
