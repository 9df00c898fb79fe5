//! Generation parity against the reference fixtures (`$TESSERA_FIXTURES/fm/<model>/cases.json →
//! generate`, default `../shared/fixtures` beside the repository), plus a property test of the
//! fast paths (KV cache, batched guidance, encoder reuse) against a plain recompute-everything
//! implementation on small random models, and refusal of bad schedules before any compute.
//!
//! Every model directory and generation case is enumerated from the files, so any fixture
//! directory of the same format works. Without fixtures the parity tests print a skip message, or
//! fail when `CI` is set.

#[path = "generation/support.rs"]
mod support;

#[path = "generation/parity.rs"]
mod parity;

#[path = "generation/random_model.rs"]
mod random_model;

#[path = "generation/recompute.rs"]
mod recompute;

#[path = "generation/refusals.rs"]
mod refusals;

#[path = "generation/lockstep.rs"]
mod lockstep;
