//! extsvc-guard: a guard for Kubernetes Services that point outside the cluster.
//!
//! The engine ([`extsvc_guard_engine`], re-exported here under its module names) judges
//! Service, Endpoints and EndpointSlice objects; this crate holds its front doors: the CLI
//! (`check`, `scan`, `serve`, …), the HTTPS server, the cluster client with its watches and
//! fresh reads, manifests, reports, logging and metrics.
#![forbid(unsafe_code)]

pub use extsvc_guard_engine::{admission, audit, finding, mutation, object, policy, rules, target};

pub mod cli;
pub mod cluster;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod parallel;
pub mod report;
pub mod server;
