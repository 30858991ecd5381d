//! The consumer core of a listener: carries out what the [`journey`](crate::journey)
//! decides, against the broker.
//!
//! * [`owner`]: one task per assigned partition, the single owner of its state
//!   ([`partition`]): it reads the partition's own [`queue`] (what is ready taken in one
//!   call, [`batch`]; records built once, bytes budgeted by [`budget`]), handles the
//!   records in order ([`execute`]), pipelines republishes ([`publish`]) and stores
//!   offsets as a contiguous watermark ([`window`]);
//! * [`dispatch`]: the task polling the consumer itself: rebalances, consumer errors
//!   ([`errors`]), and the records of a partition whose queue could not be split off,
//!   handed to its owner in batches;
//! * [`rebalance`]: assignment and revocation, fenced by generation;
//! * [`circuit`]: the listener's circuit breaker and manual pause, watched by every owner.

mod batch;
mod budget;
mod circuit;
mod dispatch;
mod errors;
mod execute;
mod owner;
mod partition;
mod publish;
mod queue;
mod rebalance;
mod window;

use std::sync::Arc;

use rdkafka::consumer::StreamConsumer;
use tokio::sync::mpsc;

use crate::listener::Listener;
use crate::metrics::Metrics;

#[cfg(feature = "fault-injection")]
pub(crate) use batch::raise_fatal_error;
pub(crate) use budget::{Budget, DEFAULT_BUDGET_BYTES};
pub(crate) use circuit::Circuit;
pub(crate) use dispatch::{run, JoinWatch};
pub(crate) use errors::ConsumerErrors;
pub(crate) use execute::{calibrate_clock, Watch};
pub(crate) use owner::Request;
pub(crate) use publish::{is_permanent, Publisher};
pub(crate) use rebalance::{ListenerContext, Partitions};

/// The consumer of one listener.
pub(crate) type ListenerConsumer = StreamConsumer<ListenerContext>;

/// A listener as it runs: what its dispatcher and the owners of its partitions share.
pub(crate) struct RunningListener {
    pub(crate) listener: Listener,
    /// What watches each of its handler calls (timeout, stall reports).
    pub(crate) watch: Watch,
    pub(crate) consumer: Arc<ListenerConsumer>,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) budget: Budget,
    pub(crate) circuit: Arc<Circuit>,
    pub(crate) requests: mpsc::UnboundedSender<Request>,
    /// Shared with the consumer's context, which reports failed commits.
    pub(crate) errors: Arc<ConsumerErrors>,
    /// Fault injection: the engine panics on the record of this key (the dispatcher if it
    /// reads the partition, else the owner).
    #[cfg(feature = "fault-injection")]
    pub(crate) panic_on_key: Option<Vec<u8>>,
}

impl RunningListener {
    /// Fault injection: panics, as a bug of `part` of the engine would, on the record of
    /// the key the runtime was told to panic on.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn inject_panic(&self, part: &str, key: Option<&[u8]>) {
        if self.panic_on_key.is_some() && key == self.panic_on_key.as_deref() {
            panic!("fault injection: the {part} panics on this record");
        }
    }
}
