//! Parity and robustness tests of tessera-model against the reference fixtures
//! (`$TESSERA_FIXTURES/fm/<model>/` and `$TESSERA_FIXTURES/vq/<tokenizer>/`, default
//! `../shared/fixtures` from the repository root).
//!
//! Every model directory and every forward case are enumerated from the files, so any other
//! fixture directory of the same format works unchanged. Without fixtures the tests skip with a
//! message, except under CI (`CI` set), where they fail.

#[path = "parity/support.rs"]
mod support;

#[path = "parity/forward.rs"]
mod forward;

#[path = "parity/loading.rs"]
mod loading;

#[path = "parity/decoding.rs"]
mod decoding;

#[path = "parity/dtypes.rs"]
mod dtypes;

#[path = "parity/vq.rs"]
mod vq;
