use retryable_topic::{retryable_topic, HandlerError};
async fn yield_now() {}
#[retryable_topic(topics = ["t"], group = "g")]
async fn h(v: serde_json::Value) -> Result<(), HandlerError> {
    let shared = std::rc::Rc::new(v);
    yield_now().await;
    drop(shared);
    Ok(())
}
fn main() {}
