use retryable_topic::{retryable_topic, HandlerError};
#[retryable_topic(topics = ["t"], group = "g", fixed_delay = ladder, tiers = ["5s", "1s", "1h", "soon"])]
async fn h(v: serde_json::Value) -> Result<(), HandlerError> { let _ = v; Ok(()) }
#[retryable_topic(topics = ["u"], group = "g", fixed_delay = ladder, tiers = ["5s", "1s", "1h"])]
async fn i(v: serde_json::Value) -> Result<(), HandlerError> { let _ = v; Ok(()) }
#[retryable_topic(topics = ["v"], group = "g", tiers = ["1s", "5s"])]
async fn j(v: serde_json::Value) -> Result<(), HandlerError> { let _ = v; Ok(()) }
fn main() {}
