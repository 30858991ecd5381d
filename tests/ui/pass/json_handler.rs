use retryable_topic::retryable_topic;

#[derive(Debug, serde::Deserialize)]
pub struct WeatherForecast {
    pub city: String,
}

#[derive(Debug)]
pub struct StoreDown;
impl std::fmt::Display for StoreDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("store down")
    }
}
impl std::error::Error for StoreDown {}

#[retryable_topic(topics = ["weather-forecast"], group = "my-listener-group",
                  attempts = 900, backoff = "5m", suffix = "-retries",
                  dlt = no_dlt, fixed_delay = single_topic)]
async fn consume(forecast: WeatherForecast) -> Result<(), StoreDown> {
    if forecast.city.is_empty() { Err(StoreDown) } else { Ok(()) }
}

fn main() {
    // The handler is still an ordinary function.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(rt.block_on(consume(WeatherForecast { city: "Oslo".into() })).is_ok());
    // …and the listener is built from the attribute.
    let l = consume::listener().unwrap();
    assert_eq!(l.topology().subscriptions(), ["weather-forecast", "weather-forecast-retries-my-listener-group"]);
    assert_eq!(l.policy().attempts(), 900);
    assert_eq!(l.policy().dlt(), retryable_topic::DltStrategy::NoDlt);
    assert_eq!(l.name(), concat!(module_path!(), "::consume"));
}
