use retryable_topic::{retryable_topic, HandlerError};
pub struct Forecast { pub city: String }
#[retryable_topic(topics = ["t"], group = "g")]
async fn h(f: Forecast) -> Result<(), HandlerError> { let _ = f.city; Ok(()) }
fn main() {}
