//! extsvc-guard's engine: what a Service, Endpoints or EndpointSlice is, the rules that judge
//! it, the policy that tunes them, and the admission decision made from their findings.
//!
//! Pure: no network, no async runtime, no Kubernetes client (the one file it reads is a
//! policy, [`policy::Policy::load`]). Other objects are seen only
//! through [`cluster::ClusterView`]; the front doors (`check`, `scan`, `serve`, in the
//! `extsvc-guard` crate) read files, the cluster and HTTP requests and hand the engine
//! objects and views.
//!
//! - [`object`]: the judged kinds, read from JSON or YAML into `k8s-openapi` types.
//! - [`rules`]: the catalogue, one file per rule id, and [`rules::judge`].
//! - [`policy`]: the policy file, its defaults, and the `matchConditions` it implies.
//! - [`target`]: addresses and hostnames, as Kubernetes and kube-proxy read them.
//! - [`mutation`]: the labels and annotations the policy patches in.
//! - [`admission`]: the AdmissionReview read and answered, and the decision.
//! - [`cluster`]: the view of other objects, the watch cache's compact store, consumers.
//! - [`audit`]: judging everything a cache holds, for the violation gauges and `scan`.
#![forbid(unsafe_code)]

pub mod admission;
pub mod audit;
pub mod cluster;
pub mod finding;
pub mod mutation;
pub mod object;
pub mod policy;
pub mod rules;
pub mod target;
