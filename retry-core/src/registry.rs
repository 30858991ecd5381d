//! Registration of listeners declared with `#[retryable_topic]`.
//!
//! The macro leaves the handler an ordinary function and adds, beside it, an
//! [`inventory`](https://docs.rs/inventory) entry: a [`Registration`] with the listener's
//! name and a function that builds it. The linker gathers these entries from every crate of
//! the program, so annotating a handler is enough:
//! [`RuntimeBuilder::registered`](crate::runtime::RuntimeBuilder::registered) picks all of
//! them up. To pick some, use
//! [`registered_where`](crate::runtime::RuntimeBuilder::registered_where) or the hidden
//! struct the macro puts in the type namespace under the handler's name:
//! `.listener(consume::listener()?)`.

use crate::error::Result;
use crate::listener::Listener;

/// One listener declared with the macro.
#[derive(Debug)]
pub struct Registration {
    /// The listener's name (the handler's path within its crate, e.g. `app::consume`).
    pub name: &'static str,
    /// Builds the listener.
    pub build: fn() -> Result<Listener>,
}

inventory::collect!(Registration);

/// Every registered listener, in no particular order.
pub fn registered() -> impl Iterator<Item = &'static Registration> {
    inventory::iter::<Registration>.into_iter()
}
