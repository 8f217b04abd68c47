//! The TracedPipeline operator.
//!
//! Reconciliation follows Stackable's shape: dereference → validate → build → apply →
//! update_status.
//!
//! Client-free:
//! * [`api`]: the `TracedPipeline` CRD (depends on nothing else here);
//! * [`switch`]: the make-before-break tracing-mode switch as a pure state machine;
//! * [`build`]: desired child objects from a `TracedPipeline` and a switch step;
//! * [`render`]: what the `render` and `crd` subcommands print.
//!
//! With a client (the `run` subcommand):
//! * [`controller`]: `Context`, `reconcile`, `error_policy`, `run`;
//! * [`observe`]: what the cluster says (collector, rollouts, pod wiring);
//! * [`apply`]: the only writer of children (server-side apply, one field manager);
//! * [`status`]: pure status computation and the only status writer;
//! * [`traces`]: `TracesFlowing` from Jaeger's API v3;
//! * [`leader`]: leader election on a Lease; [`run`]: the operator process.

pub mod api;
pub mod apply;
pub mod build;
pub mod controller;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod render;
pub mod run;
pub mod status;
pub mod switch;
pub mod traces;

#[cfg(test)]
mod fixtures;

pub use error::{Error, Result};
