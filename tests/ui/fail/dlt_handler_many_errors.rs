use retryable_topic::{dlt_handler, HandlerError, Record};
#[dlt_handler(listner = consume, name = 5, crate = "not a path")]
async fn h(r: Record) -> Result<(), HandlerError> { let _ = r; Ok(()) }
fn main() {}
