use retryable_topic::{retryable_topic, HandlerError};
#[retryable_topic(topics = ["t"], group = "g", circuit_breaker(failure_rate = 1.5, probe_delay = "10s", max_probe_delay = "1s", windw = "1s"))]
async fn h(v: serde_json::Value) -> Result<(), HandlerError> { let _ = v; Ok(()) }
fn main() {}
