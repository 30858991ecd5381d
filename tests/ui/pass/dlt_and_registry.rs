use retryable_topic::{dlt_handler, retryable_topic, HandlerError, Record};

#[retryable_topic(topics = ["orders"], group = "billing")]
async fn bill(order: serde_json::Value) -> Result<(), HandlerError> {
    let _ = order;
    Ok(())
}

#[dlt_handler(listener = bill)]
async fn dead_orders(record: Record) -> Result<(), HandlerError> {
    let _ = record;
    Ok(())
}

mod nested {
    #[retryable_topic::retryable_topic(topics = ["refunds"], group = "billing")]
    pub async fn refund(record: retryable_topic::Record) -> Result<(), retryable_topic::HandlerError> {
        let _ = record;
        Ok(())
    }
}

fn main() {
    let d = dead_orders::listener().unwrap();
    assert_eq!(d.topology().subscriptions(), ["orders-dlt-billing"]);
    assert_eq!(d.group(), "billing-dlt");
    let _ = nested::refund::listener().unwrap();
    let mut names: Vec<&str> = retryable_topic::registry::registered().map(|r| r.name).collect();
    names.sort();
    let m = module_path!();
    assert_eq!(names, [format!("{m}::bill"), format!("{m}::dead_orders"), format!("{m}::nested::refund")]);
    for r in retryable_topic::registry::registered() {
        (r.build)().unwrap();
    }
}
