//! The cluster at the edge: the kube client, the watches that fill the engine's cache, and
//! the fresh reads that confirm a denial. The view the rules see, the cache and the
//! consumers are the engine's ([`extsvc_guard_engine::cluster`]), re-exported here.

pub use extsvc_guard_engine::cluster::*;

pub mod client;
pub mod fresh;
pub mod watch;
