//! extsvc-guard: a guard for Kubernetes Services that point outside the cluster.
//!
//! One pure engine ([`rules::judge`]) judges Service, Endpoints and EndpointSlice objects
//! against the rule catalogue; the front doors (`check` today) only translate their input
//! into objects and the findings into output.
#![forbid(unsafe_code)]

pub mod admission;
pub mod audit;
pub mod cli;
pub mod cluster;
pub mod finding;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod mutation;
pub mod object;
pub mod parallel;
pub mod policy;
pub mod report;
pub mod rules;
pub mod server;
pub mod target;
