//! Runs `examples/weather_forecast.rs` as a user would, against the broker of this run
//! (its own embedded one when `KAFKA_BOOTSTRAP_SERVERS` is unset), and checks the summary.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_weather_forecast_example_runs_and_summarises() {
    let cargo = env!("CARGO");
    let built = Command::new(cargo)
        .args(["build", "--quiet", "--example", "weather_forecast"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build --example");
    assert!(built.success());
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"), Into::into);
    let exe = target.join("debug/examples/weather_forecast");
    let mut child = Command::new(&exe).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("example starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the example did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "example failed:\n{out}");
    let summary = out.split("== summary").nth(1).unwrap_or_else(|| panic!("no summary in:\n{out}"));
    println!("{summary}");
    assert!(summary.starts_with(": 51 forecasts produced"), "{summary}");
    let line = |name: &str| summary.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no `{name}` line")).to_owned();
    // 48 forecasts for real cities are handled (stored or ignored as stale); the one with
    // a missing field, the one that is not JSON and Atlantis end in the DLT.
    let store = line("store-forecast");
    assert!(store.contains("handled 48 ·") && store.contains("dead-lettered 3 ·") && store.contains("dropped 0"), "{store}");
    assert!(line("dead-forecast").contains("handled 3 ·"), "the DLT handler read every dead record");
    let alerts = line("storm-alert");
    assert!(alerts.contains("dead-lettered 0"), "no_dlt never dead-letters: {alerts}");
    for city in ["Lima", "Nairobi", "Osaka", "Oslo", "Perth", "Quito"] {
        assert!(summary.lines().any(|l| l.trim_start().starts_with(city) && l.contains("°C")), "no final forecast for {city}");
    }
    assert!(out.contains("☠ dead-lettered Atlantis after 4 attempt(s), reason exhausted"), "{out}");
    // The store's outage opens its circuit breaker: paused and resumed, at most three
    // forecasts republished for it (without the breaker: about one in three of them).
    assert!(out.contains("⏸ store: outage suspected, circuit open") && out.contains("▶ store: probe succeeded, circuit closed"), "{out}");
    let outage = line("store outage");
    let republished: u64 = outage.split(": ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).expect("a count");
    assert!(republished <= 3, "{outage}");
    assert!(!out.contains("\u{1b}["), "no ANSI escape codes when the output is not a terminal");
}
