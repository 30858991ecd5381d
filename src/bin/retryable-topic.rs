//! The `retryable-topic` command line; all of it is `retryable_topic::cli`.

fn main() -> std::process::ExitCode {
    retryable_topic::cli::main()
}
