//! In-process tests of the HTTP API (`tower::ServiceExt::oneshot`) on the fixture model with the
//! real plugins: one module per feature.

mod auth;
mod common;
mod discovery;
mod errors;
mod events;
mod runs;
mod store;
