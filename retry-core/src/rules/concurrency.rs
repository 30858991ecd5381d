//! Key concurrency: how many records of one partition may be in the handler at once (the
//! setting's one rule, shared by the listener builder and the macro).

use crate::error::ConfigError;

/// The most records of one partition a listener may have in its handler at once.
pub const MAX_KEY_CONCURRENCY: usize = 1_024;

/// Checks a `key_concurrency` setting: from 1 (one record at a time, in offset order) to
/// [`MAX_KEY_CONCURRENCY`].
pub fn check_key_concurrency(n: usize) -> Result<usize, ConfigError> {
    match n {
        1..=MAX_KEY_CONCURRENCY => Ok(n),
        _ => Err(ConfigError::new("key_concurrency", format!("must be from 1 to {MAX_KEY_CONCURRENCY}, not {n}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_one_to_the_most() {
        assert_eq!(check_key_concurrency(1).unwrap(), 1);
        assert_eq!(check_key_concurrency(MAX_KEY_CONCURRENCY).unwrap(), MAX_KEY_CONCURRENCY);
        for n in [0, MAX_KEY_CONCURRENCY + 1] {
            let e = check_key_concurrency(n).unwrap_err().to_string();
            assert!(e.contains("`key_concurrency`") && e.contains(&n.to_string()), "{e}");
        }
    }
}
