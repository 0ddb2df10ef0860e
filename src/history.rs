//! Transactions txdoctor has diagnosed, kept so that a later look-up of one that was
//! replaced can name its replacement. A backend forgets a replaced transaction at once;
//! only its inputs tell who spends them now.
//!
//! Raw transactions are public data. They are kept in memory and, when a directory is
//! configured, as `<txid>.hex` files, so that the CLI remembers across runs.

use std::path::PathBuf;

use moka::future::Cache;

use crate::bitcoin::{Transaction, Txid, consensus};

/// Remembered raw transactions.
pub struct History {
    memory: Cache<Txid, Transaction>,
    directory: Option<PathBuf>,
}

impl History {
    /// Keeps up to `capacity` transactions in memory and, if `directory` is set, on disk.
    pub fn new(capacity: u64, directory: Option<PathBuf>) -> Self {
        Self {
            memory: Cache::new(capacity),
            directory,
        }
    }

    /// A history that forgets everything when the process ends.
    pub fn in_memory() -> Self {
        Self::new(10_000, None)
    }

    /// Remembers `tx`. A failure to write the file is logged and otherwise ignored, because
    /// the history only improves later diagnoses.
    pub async fn remember(&self, tx: &Transaction) {
        let txid = tx.compute_txid();
        if self.memory.contains_key(&txid) {
            return;
        }
        self.memory.insert(txid, tx.clone()).await;
        let Some(directory) = &self.directory else {
            return;
        };
        let path = directory.join(format!("{txid}.hex"));
        let hex = consensus::encode::serialize_hex(tx);
        let written = async {
            tokio::fs::create_dir_all(directory).await?;
            tokio::fs::write(&path, hex).await
        };
        if let Err(error) = written.await {
            tracing::warn!(%txid, path = %path.display(), %error, "failed to write the history file");
        }
    }

    /// Returns the remembered transaction with `txid`, if any.
    pub async fn recall(&self, txid: Txid) -> Option<Transaction> {
        if let Some(tx) = self.memory.get(&txid).await {
            return Some(tx);
        }
        let path = self.directory.as_ref()?.join(format!("{txid}.hex"));
        let hex = tokio::fs::read_to_string(&path).await.ok()?;
        let tx: Transaction = consensus::encode::deserialize_hex(hex.trim()).ok()?;
        // A file edited by hand, or for another txid, is not evidence.
        (tx.compute_txid() == txid).then_some(tx)
    }
}
