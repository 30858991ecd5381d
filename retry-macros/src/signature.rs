//! Checks of the annotated function's signature: what the runtime can call.

use syn::{FnArg, ItemFn, ReturnType, Type};

use crate::ctxt::Ctxt;

/// How the handler takes its record.
pub(crate) enum Payload {
    /// Any `DeserializeOwned` type, read from JSON.
    Json(Type),
    /// The whole `Record`.
    Record(Type),
}

impl Payload {
    pub(crate) fn ty(&self) -> &Type {
        match self {
            Payload::Json(t) | Payload::Record(t) => t,
        }
    }
}

fn is_record(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Record" && s.arguments.is_none()))
}

/// Checks that `f` can be served as a handler; errors go to `cx`.
pub(crate) fn handler(cx: &Ctxt, f: &ItemFn, attr: &str) -> Option<Payload> {
    let sig = &f.sig;
    let mut ok = true;
    if sig.asyncness.is_none() {
        cx.error_spanned_by(sig.fn_token, format!("#[{attr}] needs an `async fn`"));
        ok = false;
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        cx.error_spanned_by(&sig.generics, format!("#[{attr}] handlers cannot be generic: the runtime must know the payload type"));
        ok = false;
    }
    if let Some(c) = &sig.constness {
        cx.error_spanned_by(c, format!("#[{attr}] handlers cannot be `const`"));
        ok = false;
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(abi, format!("#[{attr}] handlers cannot have an `extern` ABI"));
        ok = false;
    }
    if let ReturnType::Default = sig.output {
        cx.error_spanned_by(
            &sig.ident,
            format!("#[{attr}] handlers return `Result<(), E>` so failures can be retried; add `-> Result<(), E>`"),
        );
        ok = false;
    }
    let args: Vec<&FnArg> = sig.inputs.iter().collect();
    let payload = match args.as_slice() {
        [FnArg::Typed(pat)] => Some(if is_record(&pat.ty) { Payload::Record((*pat.ty).clone()) } else { Payload::Json((*pat.ty).clone()) }),
        [FnArg::Receiver(r)] => {
            cx.error_spanned_by(r, format!("#[{attr}] goes on a free function, not a method"));
            None
        }
        [] => {
            cx.error_spanned_by(
                &sig.ident,
                format!("#[{attr}] handlers take one argument: the payload (any `serde::Deserialize` type, read from JSON) or a `Record`"),
            );
            None
        }
        _ => {
            cx.error_spanned_by(&sig.inputs, format!("#[{attr}] handlers take exactly one argument: the payload (any `serde::Deserialize` type, read from JSON) or a `Record`"));
            None
        }
    };
    if ok {
        payload
    } else {
        None
    }
}
