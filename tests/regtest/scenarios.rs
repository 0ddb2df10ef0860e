//! Builds stuck-transaction situations on the node, on demand.
//!
//! Payments go through the node's descriptor wallets with an exact `fee_rate`; TRUC
//! transactions and mempool traffic are built by hand and signed by the wallet that owns
//! the inputs. Every scenario gets wallets of its own, so that no two scenarios share
//! coins.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use txdoctor::analysis::replaceability::SignalSource;
use txdoctor::bitcoin::bip32::{Xpriv, Xpub};
use txdoctor::bitcoin::hashes::Hash;
use txdoctor::bitcoin::secp256k1::Secp256k1;
use txdoctor::bitcoin::transaction::Version;
use txdoctor::bitcoin::{
    Amount, NetworkKind, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    WPubkeyHash, Witness, absolute, consensus,
};

use crate::node::{Regtest, Wallet, amount_of, btc, parse_address};

/// A transaction to diagnose, and how it was made.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// A short name for messages.
    pub name: String,
    /// The transaction to diagnose.
    pub focus: Txid,
    /// The focus transaction itself.
    pub tx: Transaction,
    /// The wallet that signed the focus transaction and can sign its replacement.
    pub owner: Wallet,
    /// The index of the owner's change output, when there is one.
    pub change: Option<usize>,
    /// Where the BIP125 signal of the focus transaction comes from.
    pub signal: SignalSource,
    /// The replacement, for a scenario whose focus transaction was replaced.
    pub replaced_by: Option<Txid>,
}

/// An unspent output and what it pays to.
#[derive(Debug, Clone)]
pub struct Coin {
    /// Where it is.
    pub outpoint: OutPoint,
    /// Its value and script.
    pub output: TxOut,
}

/// The `nSequence` of hand-built inputs: it signals BIP125 replaceability.
const SIGNALLING: Sequence = Sequence::ENABLE_RBF_NO_LOCKTIME;

/// Creates scenarios on one [`Regtest`].
pub struct Builder<'a> {
    env: &'a Regtest,
    miner: &'a Wallet,
}

/// A hand-built transaction: inputs, outputs, and a change output that takes what is
/// left after the fee.
pub struct TxSpec {
    /// nVersion, 3 for TRUC.
    pub version: i32,
    /// Coins spent.
    pub inputs: Vec<Coin>,
    /// nSequence of every input.
    pub sequence: Sequence,
    /// Outputs before the change output.
    pub outputs: Vec<TxOut>,
    /// Script of the change output, the last output.
    pub change: ScriptBuf,
    /// Fee rate in sat/kvB that the fee pays.
    pub fee_rate_sat_per_kvb: u64,
    /// Virtual bytes of other transactions the fee also pays for, such as the parent of a
    /// CPFP child.
    pub extra_vsize: u64,
}

impl<'a> Builder<'a> {
    /// Creates a builder whose wallets are funded by the node's `miner` wallet.
    pub fn new(env: &'a Regtest) -> Self {
        Self {
            env,
            miner: &env.miner,
        }
    }

    /// Creates the wallet called `name`; names must be unique on the node.
    pub fn wallet(&self, name: &str) -> anyhow::Result<Wallet> {
        self.env.create_wallet(name)
    }

    /// Sends `amounts` from the miner to new `address_type` addresses of `wallet`, and
    /// returns the new coins. They are confirmed in a block of their own, so that other
    /// scenarios' transactions stay in the mempool.
    pub fn fund(
        &self,
        wallet: &Wallet,
        address_type: &str,
        amounts: &[Amount],
    ) -> anyhow::Result<Vec<Coin>> {
        let mut outputs = Vec::new();
        let mut scripts = Vec::new();
        for amount in amounts {
            let address = wallet.new_address(address_type)?;
            outputs.push(json!({ address.to_string(): btc(*amount) }));
            scripts.push((address.script_pubkey(), *amount));
        }
        let txid = send(self.miner, &outputs, "10", json!({}))?;
        self.env.mine_only(&[txid])?;
        let tx = self.env.transaction(txid)?;
        let coins = scripts
            .iter()
            .map(|(script, _)| {
                let vout = output_index(&tx, script).context("the funding output is missing")?;
                Ok(Coin {
                    outpoint: outpoint(txid, vout),
                    output: tx.output[vout].clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(coins)
    }

    /// Creates `name`'s payer and payee wallets and funds the payer with one 1 BTC coin of
    /// `address_type`.
    fn payer_and_payee(&self, name: &str, address_type: &str) -> anyhow::Result<(Wallet, Wallet)> {
        let alice = self.wallet(&format!("{name}-alice"))?;
        let bob = self.wallet(&format!("{name}-bob"))?;
        self.fund(&alice, address_type, &[Amount::ONE_BTC])?;
        Ok((alice, bob))
    }

    /// Pays 0.1 BTC from `alice` to a new address of `bob`, with change to an address of
    /// `alice`'s change descriptor, so that her wallet can bump the fee out of it.
    fn payment(
        &self,
        alice: &Wallet,
        bob: &Wallet,
        address_type: &str,
        fee_rate: &str,
        mut options: Value,
    ) -> anyhow::Result<(Txid, usize)> {
        let payee = bob.new_address(address_type)?;
        let change = alice.change_address(address_type)?;
        options["change_address"] = json!(change.to_string());
        let outputs = [json!({ payee.to_string(): btc(Amount::from_sat(10_000_000)) })];
        let txid = send(alice, &outputs, fee_rate, options)?;
        let tx = self.env.transaction(txid)?;
        let change_index =
            output_index(&tx, &change.script_pubkey()).context("the change is missing")?;
        Ok((txid, change_index))
    }

    fn scenario(
        &self,
        name: &str,
        focus: Txid,
        owner: &Wallet,
        change: Option<usize>,
        signal: SignalSource,
    ) -> anyhow::Result<Scenario> {
        Ok(Scenario {
            name: name.to_owned(),
            focus,
            tx: self.env.transaction(focus)?,
            owner: owner.clone(),
            change,
            signal,
            replaced_by: None,
        })
    }

    /// Builds a 0.1 BTC P2WPKH payment with change, at 1 sat/vB signalling BIP125, or at
    /// 1.5 sat/vB not signalling.
    pub fn low_fee_payment(&self, name: &str, signal: bool) -> anyhow::Result<Scenario> {
        let (alice, bob) = self.payer_and_payee(name, "bech32")?;
        let rate = if signal { "1" } else { "1.5" };
        let options = json!({ "replaceable": signal });
        let (txid, change) = self.payment(&alice, &bob, "bech32", rate, options)?;
        let source = if signal {
            SignalSource::Explicit
        } else {
            SignalSource::None
        };
        self.scenario(name, txid, &alice, Some(change), source)
    }

    /// Builds a payment that does not signal, spending the change of an unconfirmed parent that
    /// does: its replaceability is inherited.
    pub fn inherited_signal(&self, name: &str) -> anyhow::Result<Scenario> {
        let (alice, bob) = self.payer_and_payee(name, "bech32")?;
        let (parent, parent_change) =
            self.payment(&alice, &bob, "bech32", "1", json!({ "replaceable": true }))?;
        let (child, change) = self.payment(
            &alice,
            &bob,
            "bech32",
            "1",
            spend_only(parent, parent_change, false),
        )?;
        self.scenario(name, child, &alice, Some(change), SignalSource::Inherited)
    }

    /// Builds a 4 sat/vB payment whose parent and grandparent pay 1 sat/vB: its chunk rate is
    /// far below its own rate.
    pub fn low_fee_ancestors(&self, name: &str) -> anyhow::Result<Scenario> {
        let (alice, bob) = self.payer_and_payee(name, "bech32")?;
        let (grandparent, change) =
            self.payment(&alice, &bob, "bech32", "1", json!({ "replaceable": true }))?;
        let (parent, change) = self.payment(
            &alice,
            &bob,
            "bech32",
            "1",
            spend_only(grandparent, change, true),
        )?;
        let (focus, change) = self.payment(
            &alice,
            &bob,
            "bech32",
            "4",
            spend_only(parent, change, true),
        )?;
        self.scenario(name, focus, &alice, Some(change), SignalSource::Explicit)
    }

    /// A 1 sat/vB payment whose receiver spent the received output at `child_rate`
    /// sat/vB: a high rate boosts the payment, a low one only adds to what a replacement
    /// must pay for.
    pub fn receiver_child(&self, name: &str, child_rate: &str) -> anyhow::Result<Scenario> {
        let (alice, bob) = self.payer_and_payee(name, "bech32")?;
        let (payment, change) =
            self.payment(&alice, &bob, "bech32", "1", json!({ "replaceable": true }))?;
        let received = 1 - change;
        let value = self.env.transaction(payment)?.output[received].value;
        let destination = bob.new_address("bech32")?;
        let options = json!({
            "inputs": [{ "txid": payment, "vout": received }],
            "add_inputs": false,
            "include_unsafe": true,
            "subtract_fee_from_outputs": [0],
            "replaceable": true,
        });
        send(
            &bob,
            &[json!({ destination.to_string(): btc(value) })],
            child_rate,
            options,
        )?;
        self.scenario(name, payment, &alice, Some(change), SignalSource::Explicit)
    }

    /// Builds a TRUC (version 3) payment at 2 sat/vB and the receiver's TRUC child at 3 sat/vB.
    pub fn truc(&self, name: &str) -> anyhow::Result<Scenario> {
        let (alice, bob) = self.payer_and_payee(name, "bech32")?;
        let coins = self.coins(&alice)?;
        let payee = bob.new_address("bech32")?;
        let paid = Amount::from_sat(10_000_000);
        let parent = self.build_exact(
            &alice,
            TxSpec {
                version: 3,
                inputs: coins,
                sequence: SIGNALLING,
                outputs: vec![TxOut {
                    value: paid,
                    script_pubkey: payee.script_pubkey(),
                }],
                change: alice.new_address("bech32")?.script_pubkey(),
                fee_rate_sat_per_kvb: 2_000,
                extra_vsize: 0,
            },
        )?;
        let parent_txid = self.env.broadcast(&parent)?;
        let child = self.build_exact(
            &bob,
            TxSpec {
                version: 3,
                inputs: vec![Coin {
                    outpoint: outpoint(parent_txid, 0),
                    output: parent.output[0].clone(),
                }],
                sequence: SIGNALLING,
                outputs: Vec::new(),
                change: bob.new_address("bech32")?.script_pubkey(),
                fee_rate_sat_per_kvb: 3_000,
                extra_vsize: 0,
            },
        )?;
        self.env.broadcast(&child)?;
        self.scenario(name, parent_txid, &alice, Some(1), SignalSource::Explicit)
    }

    /// Builds a 1 sat/vB payment that the payer replaced with the same payment at 6 sat/vB; the
    /// focus is the replaced transaction, gone from the mempool.
    pub fn replaced(&self, name: &str) -> anyhow::Result<Scenario> {
        let (alice, bob) = self.payer_and_payee(name, "bech32")?;
        let (original, change) =
            self.payment(&alice, &bob, "bech32", "1", json!({ "replaceable": true }))?;
        let mut scenario =
            self.scenario(name, original, &alice, Some(change), SignalSource::Explicit)?;
        let bumped = alice.rpc("bumpfee", &[json!(original), json!({ "fee_rate": 6 })])?;
        let replacement = serde_json::from_value(bumped["txid"].clone())?;
        scenario.replaced_by = Some(replacement);
        Ok(scenario)
    }

    /// A 0.1 BTC payment at `fee_rate` sat/vB from `alice`, who must hold a confirmed
    /// coin, to a new wallet called `{name}-bob`.
    pub fn payment_from(
        &self,
        alice: &Wallet,
        name: &str,
        fee_rate: &str,
    ) -> anyhow::Result<Scenario> {
        let bob = self.wallet(&format!("{name}-bob"))?;
        let options = json!({ "replaceable": true });
        let (txid, change) = self.payment(alice, &bob, "bech32", fee_rate, options)?;
        self.scenario(name, txid, alice, Some(change), SignalSource::Explicit)
    }

    /// Builds a payment with three confirmations.
    pub fn confirmed(&self, name: &str) -> anyhow::Result<Scenario> {
        let scenario = self.low_fee_payment(name, true)?;
        self.env.mine(3)?;
        Ok(scenario)
    }

    /// Builds a 1 sat/vB payment of 0.1 BTC from `coins` coins of `address_type`, with
    /// the payee and the change of the same type. No coin can pay alone, so all are spent.
    pub fn input_type(
        &self,
        name: &str,
        address_type: &str,
        coins: usize,
    ) -> anyhow::Result<Scenario> {
        let alice = self.wallet(&format!("{name}-alice"))?;
        let bob = self.wallet(&format!("{name}-bob"))?;
        let each = 10_000_000 / coins as u64 + 1_000_000;
        self.fund(&alice, address_type, &vec![Amount::from_sat(each); coins])?;
        let options = json!({ "replaceable": true });
        let (txid, change) = self.payment(&alice, &bob, address_type, "1", options)?;
        self.scenario(name, txid, &alice, Some(change), SignalSource::Explicit)
    }

    /// Builds a 1 sat/vB payment from a 2-of-3 P2WSH multisig coin, with multisig change.
    /// The payer's wallet has two of the three private keys.
    pub fn multisig(&self, name: &str) -> anyhow::Result<Scenario> {
        let alice = self.wallet(&format!("{name}-alice"))?;
        let bob = self.wallet(&format!("{name}-bob"))?;
        let descriptor = multisig_descriptor();
        let info = alice.rpc("getdescriptorinfo", &[json!(descriptor)])?;
        let checksum = info["checksum"].as_str().context("no checksum")?;
        let public = info["descriptor"]
            .as_str()
            .context("no public descriptor")?;
        let import = json!([{
            "desc": format!("{descriptor}#{checksum}"),
            "active": false,
            "range": [0, 10],
            "timestamp": "now",
        }]);
        let imported = alice.rpc("importdescriptors", &[import])?;
        if imported[0]["success"] != true {
            bail!("importdescriptors failed: {imported}");
        }

        let addresses = alice.rpc("deriveaddresses", &[json!(public), json!([0, 1])])?;
        let receive = parse_address(&addresses[0])?;
        let change = parse_address(&addresses[1])?;
        let funding = send(
            self.miner,
            &[json!({ receive.to_string(): btc(Amount::ONE_BTC) })],
            "10",
            json!({}),
        )?;
        self.env.mine_only(&[funding])?;

        let funding_tx = self.env.transaction(funding)?;
        let vout =
            output_index(&funding_tx, &receive.script_pubkey()).context("no multisig coin")?;
        let payee = bob.new_address("bech32")?;
        let options = json!({
            "replaceable": true,
            "change_address": change.to_string(),
            "inputs": [{ "txid": funding, "vout": vout }],
            "add_inputs": false,
        });
        let outputs = [json!({ payee.to_string(): btc(Amount::from_sat(10_000_000)) })];
        let txid = send(&alice, &outputs, "1", options)?;
        let tx = self.env.transaction(txid)?;
        let change_index = output_index(&tx, &change.script_pubkey()).context("no change")?;
        self.scenario(
            name,
            txid,
            &alice,
            Some(change_index),
            SignalSource::Explicit,
        )
    }

    /// Builds a payment of a whole 0.25 BTC coin at 1 sat/vB: one output, no change.
    pub fn no_change(&self, name: &str) -> anyhow::Result<Scenario> {
        let alice = self.wallet(&format!("{name}-alice"))?;
        let bob = self.wallet(&format!("{name}-bob"))?;
        let coin = Amount::from_sat(25_000_000);
        self.fund(&alice, "bech32", &[coin])?;
        let payee = bob.new_address("bech32")?;
        let options = json!({ "replaceable": true, "subtract_fee_from_outputs": [0] });
        let txid = send(
            &alice,
            &[json!({ payee.to_string(): btc(coin) })],
            "1",
            options,
        )?;
        self.scenario(name, txid, &alice, None, SignalSource::Explicit)
    }

    /// Fills the mempool with `count` transactions of about 77,000 vB each, at rates
    /// spread from 3 to 60 sat/vB, so that a low-fee payment waits several blocks.
    pub fn fill_mempool(&self, count: u64) -> anyhow::Result<Vec<Txid>> {
        let amounts = vec![Amount::from_sat(20_000_000); usize::try_from(count)?];
        let coins = self.fund(self.miner, "bech32", &amounts)?;
        // The outputs pay a key hash that no wallet on the node has, so that no wallet
        // tracks tens of thousands of outputs.
        let script = ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([7; 20]));
        let mut txids = Vec::new();
        for (i, coin) in coins.into_iter().enumerate() {
            let step = u64::try_from(i)?;
            let rate = 3_000 + step * 57_000 / count.saturating_sub(1).max(1);
            let outputs = vec![
                TxOut {
                    value: Amount::from_sat(1_000),
                    script_pubkey: script.clone(),
                };
                2_400
            ];
            let tx = self.build_exact(
                self.miner,
                TxSpec {
                    version: 2,
                    inputs: vec![coin],
                    sequence: SIGNALLING,
                    outputs,
                    change: self.miner.new_address("bech32")?.script_pubkey(),
                    fee_rate_sat_per_kvb: rate,
                    extra_vsize: 0,
                },
            )?;
            txids.push(self.env.broadcast(&tx)?);
        }
        Ok(txids)
    }

    /// Lists the wallet's confirmed coins.
    pub fn coins(&self, wallet: &Wallet) -> anyhow::Result<Vec<Coin>> {
        let unspent = wallet.rpc("listunspent", &[json!(1)])?;
        unspent
            .as_array()
            .context("listunspent returned no list")?
            .iter()
            .map(|coin| {
                let txid = serde_json::from_value(coin["txid"].clone())?;
                let vout = u32::try_from(coin["vout"].as_u64().context("no vout")?)?;
                let script = coin["scriptPubKey"].as_str().context("no scriptPubKey")?;
                Ok(Coin {
                    outpoint: OutPoint { txid, vout },
                    output: TxOut {
                        value: amount_of(&coin["amount"])?,
                        script_pubkey: ScriptBuf::from_hex(script)?,
                    },
                })
            })
            .collect()
    }

    /// Builds and signs `spec`, sizing the fee on the signed transaction's vsize.
    pub fn build_exact(&self, signer: &Wallet, spec: TxSpec) -> anyhow::Result<Transaction> {
        let input_total: Amount = spec.inputs.iter().map(|coin| coin.output.value).sum();
        let output_total: Amount = spec.outputs.iter().map(|output| output.value).sum();
        let mut fee = Amount::ZERO;
        // A signature can come out a byte shorter or longer, so resize until the fee pays
        // the rate on the signed size. It may then pay for one vB more than that size.
        for _ in 0..4 {
            let change = input_total
                .checked_sub(output_total + fee)
                .context("the inputs do not cover the outputs and the fee")?;
            let tx = sign_transaction(signer, &unsigned(&spec, change), &spec.inputs)?;
            let vsize = tx.vsize() as u64 + spec.extra_vsize;
            let needed = Amount::from_sat((spec.fee_rate_sat_per_kvb * vsize).div_ceil(1000));
            if needed <= fee && (fee > Amount::ZERO || needed == Amount::ZERO) {
                return Ok(tx);
            }
            fee = needed;
        }
        bail!("the fee did not settle on the transaction's size")
    }
}

/// Returns `spec` unsigned, with `change` in its last output.
fn unsigned(spec: &TxSpec, change: Amount) -> Transaction {
    let mut output = spec.outputs.clone();
    output.push(TxOut {
        value: change,
        script_pubkey: spec.change.clone(),
    });
    Transaction {
        version: Version(spec.version),
        lock_time: absolute::LockTime::ZERO,
        input: spec
            .inputs
            .iter()
            .map(|coin| TxIn {
                previous_output: coin.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: spec.sequence,
                witness: Witness::new(),
            })
            .collect(),
        output,
    }
}

/// Signs `tx`, which spends `coins`, with the keys of `wallet`. The coins are passed to
/// the node, so that it can sign a child of a parent it has not seen yet.
///
/// # Errors
///
/// Returns an error when the node fails or cannot sign every input.
pub fn sign_transaction(
    wallet: &Wallet,
    tx: &Transaction,
    coins: &[Coin],
) -> anyhow::Result<Transaction> {
    let hex = consensus::encode::serialize_hex(tx);
    let previous: Vec<Value> = coins
        .iter()
        .map(|coin| {
            json!({
                "txid": coin.outpoint.txid,
                "vout": coin.outpoint.vout,
                "scriptPubKey": coin.output.script_pubkey.to_hex_string(),
                "amount": btc(coin.output.value),
            })
        })
        .collect();
    let signed = wallet.rpc(
        "signrawtransactionwithwallet",
        &[json!(hex), json!(previous)],
    )?;
    if signed["complete"] != true {
        bail!(
            "wallet {} could not sign every input: {}",
            wallet.name,
            signed["errors"]
        );
    }
    let hex = signed["hex"].as_str().context("no signed hex")?;
    Ok(consensus::encode::deserialize_hex(hex)?)
}

/// Calls the wallet's `send` with `outputs` at `fee_rate` sat/vB.
fn send(
    wallet: &Wallet,
    outputs: &[Value],
    fee_rate: &str,
    options: Value,
) -> anyhow::Result<Txid> {
    let result = wallet.rpc(
        "send",
        &[
            json!(outputs),
            Value::Null,
            json!("unset"),
            json!(fee_rate),
            options,
        ],
    )?;
    if result["complete"] != true {
        bail!("send did not complete: {result}");
    }
    Ok(serde_json::from_value(result["txid"].clone())?)
}

/// `send` options that spend exactly one output of `txid`, even while it is unconfirmed.
fn spend_only(txid: Txid, vout: usize, replaceable: bool) -> Value {
    json!({
        "inputs": [{ "txid": txid, "vout": vout }],
        "add_inputs": false,
        "replaceable": replaceable,
    })
}

fn output_index(tx: &Transaction, script: &ScriptBuf) -> Option<usize> {
    tx.output
        .iter()
        .position(|output| output.script_pubkey == *script)
}

fn outpoint(txid: Txid, vout: usize) -> OutPoint {
    OutPoint {
        txid,
        vout: u32::try_from(vout).expect("an output index fits in u32"),
    }
}

/// Returns a 2-of-3 P2WSH descriptor with two private keys and one public key, from fixed seeds:
/// regtest keys with no value.
fn multisig_descriptor() -> String {
    let secp = Secp256k1::new();
    let key = |seed: u8| Xpriv::new_master(NetworkKind::Test, &[seed; 32]).expect("valid seed");
    let third = Xpub::from_priv(&secp, &key(3));
    format!("wsh(multi(2,{}/0/*,{}/0/*,{third}/0/*))", key(1), key(2))
}
