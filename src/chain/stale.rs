//! Facts served from memory after every backend failed, collected per diagnosis.
//!
//! The cache records each stale fact it serves in a task-local list, so that the use case
//! that asked can tell its caller what is old without every [`super::ChainSource`] method
//! carrying the note in its return type. Futures polled inside [`collect`] on the same
//! task (`join!`, `join_all`) share the list; a fact served outside it is not recorded.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

tokio::task_local! {
    static STALE_FACTS: RefCell<Vec<StaleFact>>;
}

/// A fact served from memory because no backend could be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleFact {
    /// What the fact is, such as "transaction 1a2b…".
    pub what: String,
    /// Time since a backend returned it.
    pub age: Duration,
    /// Why it was not fetched again.
    pub reason: String,
}

impl std::fmt::Display for StaleFact {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "stale: {} ({} s old), served from memory because the backends failed: {}",
            self.what,
            self.age.as_secs(),
            self.reason
        )
    }
}

/// Runs `future` and returns its output with the stale facts served while it ran.
pub async fn collect<F: Future>(future: F) -> (F::Output, Vec<StaleFact>) {
    STALE_FACTS
        .scope(RefCell::new(Vec::new()), async {
            let output = future.await;
            let facts = STALE_FACTS.with(RefCell::take);
            (output, facts)
        })
        .await
}

/// Records a stale fact for the enclosing [`collect`], if there is one.
pub(crate) fn record(fact: StaleFact) {
    let recorded = STALE_FACTS.try_with(|facts| facts.borrow_mut().push(fact.clone()));
    if recorded.is_err() {
        tracing::debug!(what = %fact.what, "stale fact served outside a diagnosis");
    }
}
