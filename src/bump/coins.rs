//! The owner's other confirmed coins, found by scanning the descriptors through
//! `bdk_esplora`, for a replacement whose change cannot pay the higher fee.

use bdk_esplora::EsploraAsyncExt;
use bdk_esplora::esplora_client::AsyncClient;

use super::owner::Owner;
use crate::bitcoin::{OutPoint, Transaction, TxOut};

/// Addresses scanned past the last used one on each keychain.
pub const STOP_GAP: usize = 20;

/// Requests the scan sends to the Esplora server at once.
const PARALLEL_REQUESTS: usize = 4;

/// A confirmed coin of the owner's.
#[derive(Debug, Clone, PartialEq)]
pub struct Coin {
    /// Its outpoint.
    pub outpoint: OutPoint,
    /// Its value and script.
    pub txout: TxOut,
    /// The transaction that created it, for `non_witness_utxo`.
    pub previous: Transaction,
}

/// Scans every wallet of `owner` and returns its confirmed unspent coins, largest first.
/// `progress` receives one line per wallet.
///
/// # Errors
///
/// Returns a message naming the wallet whose scan failed.
pub async fn confirmed_coins(
    owner: &mut Owner,
    client: &AsyncClient,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Vec<Coin>, String> {
    let count = owner.wallet_count();
    for index in 0..count {
        progress(format!(
            "looking up the owner's coins: wallet {} of {count}",
            index + 1
        ));
        let wallet = owner.wallet_mut(index).ok_or("no such wallet")?;
        let request = wallet.start_full_scan().build();
        let update = client
            .full_scan(request, STOP_GAP, PARALLEL_REQUESTS)
            .await
            .map_err(|error| format!("failed to scan wallet {} for coins: {error}", index + 1))?;
        wallet.apply_update(update).map_err(|error| {
            format!("failed to apply the scan of wallet {}: {error}", index + 1)
        })?;
    }
    let mut coins = Vec::new();
    for index in 0..count {
        let Some(wallet) = owner.wallet(index) else {
            continue;
        };
        for output in wallet
            .list_unspent()
            .filter(|output| output.chain_position.is_confirmed())
        {
            let Some(previous) = wallet.get_tx(output.outpoint.txid) else {
                continue;
            };
            coins.push(Coin {
                outpoint: output.outpoint,
                txout: output.txout.clone(),
                previous: previous.tx_node.tx.as_ref().clone(),
            });
        }
    }
    coins.sort_by_key(|coin| std::cmp::Reverse(coin.txout.value));
    Ok(coins)
}
