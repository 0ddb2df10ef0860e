//! txdoctor diagnoses stuck Bitcoin transactions and prices the ways to unstick them.
//!
//! Data flows one way through the crate:
//!
//! ```text
//!  cli / api                      parse input, render output
//!      |
//!  diagnose                       one request: fetch the facts, then analyse them
//!   /       \
//! chain     analysis <- policy    facts in (Esplora, cached)   pure rules, no I/O
//! ```
//!
//! - [`chain`] owns the [`chain::ChainSource`] trait, the Esplora backend and the cache.
//!   It translates backend answers into our types, checks them, and decides nothing.
//! - [`policy`] holds Bitcoin Core's relay and replacement rules as pure functions.
//! - [`analysis`] turns facts into a [`analysis::Diagnosis`]: sizes, the unconfirmed
//!   cluster and its chunks, replaceability, mempool position, estimate and verdict.
//! - [`diagnose`] orchestrates one request; [`history`] remembers diagnosed transactions
//!   so that a replaced one can later be matched with its replacement.
//! - [`api`] and [`cli`] are thin interfaces over [`diagnose`]; [`config`] is the typed
//!   configuration they share.

pub mod analysis;
pub mod api;
pub mod bump;
pub mod chain;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod feerate;
pub mod history;
pub mod input;
pub mod ops;
pub mod policy;
pub mod report;
pub mod telemetry;

pub use bdk_wallet::bitcoin;
