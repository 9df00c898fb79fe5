//! Integration tests of tessera-engine against the fixture model (`fm7_tiny_swiglu_shared`) and
//! the built plugins (`cargo xtask plugins`): one binary, one module per feature.

mod common;

mod batch;
mod cache;
mod cancel;
mod chain;
mod failure;
mod load;
mod trap;
