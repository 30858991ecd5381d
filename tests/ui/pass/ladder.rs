use retryable_topic::{retryable_topic, HandlerError};

#[retryable_topic(topics = ["orders"], group = "g", attempts = 5, backoff = "2s", multiplier = 3.0, max_delay = "10m",
                  fixed_delay = ladder, tiers = ["1s", "10s", "2m"])]
async fn consume(v: serde_json::Value) -> Result<(), HandlerError> {
    let _ = v;
    Ok(())
}

#[retryable_topic(topics = ["payments"], group = "g", fixed_delay = ladder)]
async fn default_tiers(v: serde_json::Value) -> Result<(), HandlerError> {
    let _ = v;
    Ok(())
}

fn main() {
    let listener = consume::listener().unwrap();
    let retry: Vec<&str> = listener.topology().sources()[0].retry.iter().map(String::as_str).collect();
    assert_eq!(retry, ["orders-retries-g-1s", "orders-retries-g-10s", "orders-retries-g-2m"]);
    assert_eq!(default_tiers::listener().unwrap().topology().sources()[0].retry.len(), 7);
}
