//! The TracedPipeline operator.
//!
//! Reconciliation follows Stackable's shape: dereference → validate → build → apply →
//! update_status. This crate currently holds the client-free half:
//!
//! * [`api`]: the `TracedPipeline` CRD (depends on nothing else here);
//! * [`switch`]: the make-before-break tracing-mode switch as a pure state machine;
//! * [`build`]: desired child objects from a `TracedPipeline` and a switch step;
//! * [`render`]: what the `render` and `crd` subcommands print.

pub mod api;
pub mod build;
pub mod render;
pub mod switch;
