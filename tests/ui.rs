//! Compile-time behaviour of the macros (trybuild; the toolchain is pinned in
//! rust-toolchain.toml so the `.stderr` snapshots stay stable; `TRYBUILD=overwrite`
//! rewrites them). Broker-independent, so it runs once, in the embedded-broker pass.

#[test]
fn ui() {
    if std::env::var_os("KAFKA_BOOTSTRAP_SERVERS").is_some() {
        eprintln!("ui: compile-time tests run in the embedded pass only (they use no broker)");
        return;
    }
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
