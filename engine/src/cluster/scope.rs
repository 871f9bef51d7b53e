//! What a fresh read of a namespace fetches, by the kind under review.

use crate::object::Kind;

/// What of a namespace one read fetches afresh; the rest of what a judgement reads comes
/// from the cache (see [`crate::cluster::Overlay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FreshScope {
    pub services: bool,
    /// Endpoints and EndpointSlices.
    pub endpoints: bool,
    /// The Namespace's labels.
    pub labels: bool,
    /// The Ingresses and Gateway API routes (see [`crate::cluster::consumers`]).
    pub consumers: bool,
}

impl FreshScope {
    /// What the cross-object findings of a `kind` rest on. A Service's rest on the endpoints paired with it (headless port remap, port
    /// names). An Endpoints' or EndpointSlice's rest on the namespace's Services (orphaned,
    /// overwritten, paired ports) and on their endpoints: `endpoints-orphaned` denies only
    /// when a likely Service exists, and a Service whose own endpoints were just created is
    /// not one. What a hint's text names beyond that (say, which orphan looks meant for a
    /// Service) may come from the cache: it does not change a verdict.
    pub fn for_denials_of(kind: Kind) -> FreshScope {
        FreshScope {
            services: kind != Kind::Service,
            endpoints: true,
            labels: false,
            consumers: false,
        }
    }

    /// Nothing to read.
    pub fn none() -> FreshScope {
        FreshScope {
            services: false,
            endpoints: false,
            labels: false,
            consumers: false,
        }
    }
}
