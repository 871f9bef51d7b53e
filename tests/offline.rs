//! Tests that need no server and no cluster, in one test binary: `check`, `certs` and
//! `policy` as a user runs them, `deploy/` as kustomize renders it, the README and docs held
//! to the code, the seeds' examples, the captured AdmissionReviews (and the matchConditions
//! proven on them), and hostile input.

mod offline {
    mod admission_fixtures;
    mod certs;
    mod cli;
    mod deploy;
    mod docs;
    mod hostile;
    mod seeds;
}
