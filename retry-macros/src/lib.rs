//! Placeholder; replaced by the macro implementation.
use proc_macro::TokenStream;
/// Placeholder.
#[proc_macro_attribute]
pub fn retryable_topic(_args: TokenStream, item: TokenStream) -> TokenStream { item }
/// Placeholder.
#[proc_macro_attribute]
pub fn dlt_handler(_args: TokenStream, item: TokenStream) -> TokenStream { item }
