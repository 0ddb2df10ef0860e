//! The owner's wallet, from public descriptors only: which scripts are theirs, fresh
//! change scripts, signing-size estimates, and the BIP32 and taproot metadata a hardware
//! signer needs in a PSBT.
//!
//! Each descriptor, or receive/change pair, becomes an in-memory `bdk_wallet::Wallet`
//! that is never persisted. Descriptors are parsed here and nowhere else, are never
//! logged, and a descriptor holding private material is rejected without repeating it.

use bdk_wallet::miniscript::descriptor::{DefiniteDescriptorKey, DescriptorPublicKey};
use bdk_wallet::miniscript::psbt::PsbtExt;
use bdk_wallet::miniscript::{Descriptor, ForEachKey};
use bdk_wallet::{KeychainKind, Wallet};

use crate::bitcoin::secp256k1::Secp256k1;
use crate::bitcoin::{NetworkKind, Psbt, ScriptBuf};
use crate::config::Network;
use crate::input::looks_like_private_key;

/// Which descriptor an error is about, as the user gave them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The n-th `--descriptor`, from 1.
    Descriptor(usize),
    /// The n-th `--change-descriptor`, from 1.
    ChangeDescriptor(usize),
}

impl std::fmt::Display for Position {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Descriptor(n) => write!(formatter, "descriptor {n}"),
            Position::ChangeDescriptor(n) => write!(formatter, "change descriptor {n}"),
        }
    }
}

/// Errors of descriptor parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// A descriptor or key contains private material, which is not repeated.
    #[error(
        "{position} contains a private key; give the public descriptor only (xpub or tpub keys), and never share the private one"
    )]
    PrivateKey {
        /// Position among the descriptors given, from 1.
        position: Position,
    },
    /// Not a valid descriptor.
    #[error("{position} is invalid: {reason}")]
    Invalid {
        /// Position among the descriptors given, from 1.
        position: Position,
        /// The parser's reason.
        reason: String,
    },
    /// The keys are for another network.
    #[error("{position} has {found} keys but the network is {network:?}")]
    WrongNetwork {
        /// Position among the descriptors given, from 1.
        position: Position,
        /// `mainnet` or `test network` keys.
        found: &'static str,
        /// The configured network.
        network: Network,
    },
    /// No descriptor was given.
    #[error("no descriptor given; give the wallet's public descriptor")]
    Missing,
}

/// The place of a script in the owner's wallets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// Which wallet.
    pub wallet: usize,
    /// Receive or change keychain.
    pub keychain: KeychainKind,
    /// Derivation index.
    pub index: u32,
}

impl Ownership {
    /// Returns whether the script is on a change keychain.
    pub fn is_change(&self) -> bool {
        self.keychain == KeychainKind::Internal
    }
}

struct OwnedWallet {
    wallet: Wallet,
    /// A single descriptor whose keychain is the change one by convention (`.../1/*`).
    single_change: bool,
}

/// The owner's wallets.
pub struct Owner {
    wallets: Vec<OwnedWallet>,
}

impl std::fmt::Debug for Owner {
    /// Shows only how many wallets there are: descriptors are never printed.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Owner({} wallets)", self.wallets.len())
    }
}

/// Strips a `#checksum` suffix.
fn without_checksum(text: &str) -> &str {
    text.split_once('#').map_or(text, |(body, _)| body)
}

fn parse_public(
    text: &str,
    position: Position,
    network: Network,
) -> Result<Descriptor<DescriptorPublicKey>, DescriptorError> {
    if looks_like_private_key(text) {
        return Err(DescriptorError::PrivateKey { position });
    }
    let secp = Secp256k1::signing_only();
    let (descriptor, secrets) =
        Descriptor::parse_descriptor(&secp, text.trim()).map_err(|error| {
            DescriptorError::Invalid {
                position,
                reason: error.to_string(),
            }
        })?;
    if !secrets.is_empty() {
        return Err(DescriptorError::PrivateKey { position });
    }
    let expected = network.bitcoin().into();
    let mut wrong: Option<NetworkKind> = None;
    descriptor.for_each_key(|key| {
        let kind = match key {
            DescriptorPublicKey::XPub(xkey) => Some(xkey.xkey.network),
            DescriptorPublicKey::MultiXPub(xkey) => Some(xkey.xkey.network),
            DescriptorPublicKey::Single(_) => None,
        };
        if let Some(kind) = kind.filter(|kind| *kind != expected) {
            wrong = Some(kind);
        }
        true
    });
    if let Some(kind) = wrong {
        let found = if kind == NetworkKind::Main {
            "mainnet (xpub)"
        } else {
            "test network (tpub)"
        };
        return Err(DescriptorError::WrongNetwork {
            position,
            found,
            network,
        });
    }
    Ok(descriptor)
}

impl Owner {
    /// Builds the wallets: a multipath descriptor (`/<0;1>/*`) is a receive/change pair,
    /// each `--change-descriptor` pairs with the `--descriptor` at the same position, and
    /// two descriptors that differ only in `/0/*` against `/1/*` are paired too.
    ///
    /// # Errors
    ///
    /// Returns [`DescriptorError`] for private, invalid or wrong-network descriptors.
    pub fn from_descriptors(
        descriptors: &[String],
        change_descriptors: &[String],
        network: Network,
        lookahead: u32,
    ) -> Result<Self, DescriptorError> {
        if descriptors.is_empty() {
            return Err(DescriptorError::Missing);
        }
        let mut receive = Vec::new();
        for (i, text) in descriptors.iter().enumerate() {
            receive.push((
                parse_public(text, Position::Descriptor(i + 1), network)?,
                text.clone(),
            ));
        }
        let mut change = Vec::new();
        for (i, text) in change_descriptors.iter().enumerate() {
            change.push(parse_public(
                text,
                Position::ChangeDescriptor(i + 1),
                network,
            )?);
        }
        let mut wallets = Vec::new();
        let mut used = vec![false; receive.len()];
        let create = |params: bdk_wallet::CreateParams, position: Position| {
            params
                .network(network.bitcoin())
                .lookahead(lookahead)
                .create_wallet_no_persist()
                .map_err(|error| DescriptorError::Invalid {
                    position,
                    reason: error.to_string(),
                })
        };
        for (i, (descriptor, text)) in receive.iter().enumerate() {
            if used[i] {
                continue;
            }
            used[i] = true;
            let position = Position::Descriptor(i + 1);
            if descriptor.is_multipath() {
                let params = Wallet::create_from_two_path_descriptor(descriptor.to_string());
                wallets.push(OwnedWallet {
                    wallet: create(params, position)?,
                    single_change: false,
                });
                continue;
            }
            if let Some(paired_change) = change.get(i) {
                let params = Wallet::create(descriptor.to_string(), paired_change.to_string());
                wallets.push(OwnedWallet {
                    wallet: create(params, position)?,
                    single_change: false,
                });
                continue;
            }
            let body = without_checksum(text);
            let partner = body.contains("/0/*").then(|| body.replace("/0/*", "/1/*"));
            let partner_index = partner.and_then(|partner| {
                receive
                    .iter()
                    .position(|(_, other)| without_checksum(other) == partner)
            });
            match partner_index.filter(|&j| !used[j]) {
                Some(j) => {
                    used[j] = true;
                    let params = Wallet::create(descriptor.to_string(), receive[j].0.to_string());
                    wallets.push(OwnedWallet {
                        wallet: create(params, position)?,
                        single_change: false,
                    });
                }
                None => {
                    let single_change = body.contains("/1/*");
                    let params = Wallet::create_single(descriptor.to_string());
                    wallets.push(OwnedWallet {
                        wallet: create(params, position)?,
                        single_change,
                    });
                }
            }
        }
        Ok(Self { wallets })
    }

    /// Number of wallets.
    pub fn wallet_count(&self) -> usize {
        self.wallets.len()
    }

    /// Returns the wallet at `index`.
    pub fn wallet(&self, index: usize) -> Option<&Wallet> {
        self.wallets.get(index).map(|owned| &owned.wallet)
    }

    /// Returns the wallet at `index` mutably, for applying a scan.
    pub fn wallet_mut(&mut self, index: usize) -> Option<&mut Wallet> {
        self.wallets.get_mut(index).map(|owned| &mut owned.wallet)
    }

    /// Finds `script` among the owner's scripts, within the lookahead.
    pub fn owns(&self, script: &ScriptBuf) -> Option<Ownership> {
        self.wallets.iter().enumerate().find_map(|(wallet, owned)| {
            let (keychain, index) = owned.wallet.derivation_of_spk(script.clone())?;
            let keychain = if owned.single_change {
                KeychainKind::Internal
            } else {
                keychain
            };
            Some(Ownership {
                wallet,
                keychain,
                index,
            })
        })
    }

    /// Derives the descriptor of `ownership` at its index.
    pub fn derived(&self, ownership: Ownership) -> Option<Descriptor<DefiniteDescriptorKey>> {
        let owned = self.wallets.get(ownership.wallet)?;
        let keychain = if owned.single_change {
            KeychainKind::External
        } else {
            ownership.keychain
        };
        owned
            .wallet
            .public_descriptor(keychain)
            .at_derivation_index(ownership.index)
            .ok()
    }

    /// A change script of `wallet` that none of `avoid` uses: the lowest unused change index.
    pub fn fresh_change_script(&self, wallet: usize, avoid: &[ScriptBuf]) -> Option<ScriptBuf> {
        let owned = self.wallets.get(wallet)?;
        let keychain = if owned.single_change || owned.wallet.keychains().count() == 1 {
            KeychainKind::External
        } else {
            KeychainKind::Internal
        };
        (0..10_000u32)
            .map(|index| {
                owned
                    .wallet
                    .peek_address(keychain, index)
                    .address
                    .script_pubkey()
            })
            .find(|script| !avoid.contains(script))
    }

    /// Adds BIP32 derivations, taproot key origins and internal keys, and redeem and
    /// witness scripts to every owned input and output of `psbt`. Inputs must already
    /// carry their `witness_utxo`.
    ///
    /// # Errors
    ///
    /// Returns the miniscript error text when a descriptor does not fit its script.
    pub fn complete_psbt(&self, psbt: &mut Psbt) -> Result<(), String> {
        for index in 0..psbt.inputs.len() {
            let Some(prevout) = psbt.inputs[index].witness_utxo.clone() else {
                continue;
            };
            let Some(derived) = self
                .owns(&prevout.script_pubkey)
                .and_then(|owned| self.derived(owned))
            else {
                continue;
            };
            psbt.update_input_with_descriptor(index, &derived)
                .map_err(|error| format!("input {index}: {error}"))?;
        }
        for index in 0..psbt.outputs.len() {
            let script = psbt.unsigned_tx.output[index].script_pubkey.clone();
            let Some(derived) = self.owns(&script).and_then(|owned| self.derived(owned)) else {
                continue;
            };
            psbt.update_output_with_descriptor(index, &derived)
                .map_err(|error| format!("output {index}: {error}"))?;
        }
        Ok(())
    }
}

/// Weight an input adds once signed, beyond its 41 unsigned bytes (outpoint, empty
/// scriptSig length, nSequence). ECDSA signatures are counted at 72 bytes, the largest
/// low-S DER signature with its sighash byte, because not every signer grinds for low R.
/// Schnorr signatures are counted at 64 bytes: the PSBTs built here set no sighash type,
/// so a taproot signer uses SIGHASH_DEFAULT, whose signature has no sighash byte
/// (BIP341). `None` for script types txdoctor cannot size.
pub fn satisfaction_weight(script: &ScriptBuf) -> Option<u64> {
    if script.is_p2wpkh() {
        // Witness: item count, 72-byte signature, 33-byte key, each with a length byte.
        Some(1 + 1 + 72 + 1 + 33)
    } else if script.is_p2tr() {
        Some(1 + 1 + 64)
    } else if script.is_p2pkh() {
        // scriptSig of 107 bytes (non-witness, ×4), plus the empty witness count in a
        // segwit transaction, charged by the caller.
        Some(4 * (1 + 72 + 1 + 33))
    } else if script.is_p2sh() {
        // P2SH-P2WPKH: a 23-byte scriptSig pushing the witness program, then the witness.
        Some(4 * 23 + 1 + 1 + 72 + 1 + 33)
    } else {
        None
    }
}
