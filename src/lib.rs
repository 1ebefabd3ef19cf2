//! ngx-mail-auth: answers nginx mail's `auth_http` requests inside nginx.
//!
//! Plain-Rust modules (no nginx types, unit-tested with `cargo test`):
//! `protocol` (auth_http model), `scheme` (password schemes), `store` (passwd-file, SQLite),
//! `policy` (per-account rules), `cidr` (networks), `realip` (the client behind a PROXY-protocol
//! balancer), `engine` (the whole decision),
//! `smtp` (envelope addresses), `basic` (Basic-credential bridge),
//! `shm` / `cache` / `limiter` / `metrics` (tables and counters shared by workers in shared memory).
//! The FFI layer lives in `nginx` and is the only place with `unsafe`.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod basic;
pub mod cache;
pub mod cidr;
pub mod config;
pub mod engine;
pub mod fleet;
mod hex;
pub mod limiter;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod protocol;
pub mod realip;
pub mod scheme;
pub mod shm;
pub mod smtp;
pub mod store;
#[cfg(test)]
mod testutil;

// The nginx glue is left out of unit tests (the test binary has no nginx to link against) and
// of builds without the `module` feature (fuzz/).
#[cfg(all(feature = "module", not(test)))]
mod nginx;
