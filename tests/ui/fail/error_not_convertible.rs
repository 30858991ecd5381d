use retryable_topic::retryable_topic;
pub struct NotAnError;
#[retryable_topic(topics = ["t"], group = "g")]
async fn h(v: serde_json::Value) -> Result<(), NotAnError> { let _ = v; Ok(()) }
fn main() {}
