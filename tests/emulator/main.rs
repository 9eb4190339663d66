//! Google's Pub/Sub emulator pushing to the bridge, with verification on, and what the
//! emulator's client published read back from a real tansu and compared field by field.
//!
//! `test_support::emulator` starts the emulator and the relay that plays Pub/Sub's push
//! authentication; one module per group of tests. docs/emulator.md says what the emulator cannot show and which
//! hand-made test covers each such production behaviour.

// Tests read their own environment and collect the relayed bodies whole.
#![allow(clippy::disallowed_methods)]

mod limits;
mod mapping;
mod redelivery;
mod routes;
mod schema;
mod typed;
