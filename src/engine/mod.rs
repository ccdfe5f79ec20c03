//! The engine: a consumer thread dispatching records to a handler pool,
//! and a relay sending parked records back when they are due.
//!
//! Layers, each file importing only files below it:
//!
//! - `builder` (settings, validation, start) and `running` (the
//!   [`Engine`] handle) start and stop the threads through `supervisor`;
//! - the threads: `dispatch` (the consumer thread), `worker` (the handler
//!   pool), `relay/` (heap and relay thread);
//! - `health` (running / degraded / stopped, from atomics), `breaker`
//!   (the dead-letter limit) and `shutdown` (what a shutdown could not
//!   finish);
//! - what the threads share: `poll` (polling with backoff), `writes`
//!   (acknowledged writes), `partitions` (owned partitions and the
//!   watermark commit), `lease` (fencing of stale assignments), `job`,
//!   `keyorder` (the blocked keys of `KeyOrder::Kept`),
//!   `watermark` (the offset tracker), `backoff` (the one retry schedule)
//!   and `context` (settings, counters, the stop signal).

mod backoff;
mod breaker;
mod builder;
mod context;
mod dispatch;
mod health;
mod job;
mod keyorder;
mod lease;
#[cfg(feature = "metrics")]
mod metrics;
mod panic;
mod partitions;
mod poll;
mod relay;
mod running;
mod shutdown;
mod supervisor;
mod topics;
mod watermark;
mod worker;
mod writes;

pub use breaker::{DeadLetterLimit, DeadLetterTrip};
pub use builder::EngineBuilder;
pub use health::{Health, HealthIssue, HealthProbe, HealthStatus, ThreadFailure};
pub use keyorder::KeyOrder;
pub use relay::private::Redelivery;
pub(crate) use relay::PARKED_ENTRY_BYTES;
pub use running::Engine;
pub use shutdown::ShutdownReport;
pub use topics::MissingTopics;
