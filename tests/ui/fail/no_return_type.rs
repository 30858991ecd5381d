use retryable_topic::{retryable_topic, HandlerError};
#[retryable_topic(topics = ["t"], group = "g")]
async fn h(v: serde_json::Value) { let _ = v; }
fn main() {}
