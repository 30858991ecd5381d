use retryable_topic::{dlt_handler, HandlerError, Record};
#[dlt_handler(name = "x")]
async fn dead(r: Record) -> Result<(), HandlerError> { let _ = r; Ok(()) }
fn main() {}
