//! Parsing of user input at the edge: txids and raw transactions, with messages that name
//! what is wrong and never repeat a private key pasted by mistake.

use std::str::FromStr;

use crate::bitcoin::{Transaction, Txid, consensus};

/// Errors of user input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not a txid.
    #[error("invalid txid {shown}: {reason}")]
    InvalidTxid {
        /// The input, shortened.
        shown: String,
        /// The problem found.
        reason: String,
    },
    /// Not a raw transaction in hex.
    #[error("invalid raw transaction: {reason}")]
    InvalidTxHex {
        /// The problem found.
        reason: String,
    },
    /// The input looks like a private key; it is not repeated.
    #[error(
        "the input looks like a private key (xprv, tprv or WIF); it was not used or stored. Never share it: anyone who has it can spend the coins"
    )]
    PrivateKey,
}

/// Returns whether `text`, or any word in it, looks like an extended private key or a WIF private
/// key, so that it is neither used nor repeated.
pub fn looks_like_private_key(text: &str) -> bool {
    let extended = [
        "xprv", "tprv", "yprv", "zprv", "uprv", "vprv", "Yprv", "Zprv", "Uprv", "Vprv",
    ];
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| {
            if extended.iter().any(|prefix| word.starts_with(prefix)) && word.len() >= 100 {
                return true;
            }
            // WIF: base58 of 51 (uncompressed) or 52 (compressed) characters with a known prefix.
            // A truncated txid is hex; a WIF key almost never is.
            let base58 = word.chars().all(|c| !"0OIl".contains(c))
                && !word.chars().all(|c| c.is_ascii_hexdigit());
            let wif_prefix = word.starts_with(['5', 'K', 'L', 'c', '9']);
            base58 && wif_prefix && (word.len() == 51 || word.len() == 52)
        })
}

/// Parses a txid: 64 hex characters.
///
/// # Errors
///
/// Returns [`InputError`] naming what is wrong.
pub fn parse_txid(text: &str) -> Result<Txid, InputError> {
    let text = text.trim();
    if looks_like_private_key(text) {
        return Err(InputError::PrivateKey);
    }
    let shown = shorten(text);
    let reason = if text.is_empty() {
        "it is empty".to_owned()
    } else if text.len() != 64 {
        format!(
            "expected 64 hexadecimal characters, got {}",
            text.chars().count()
        )
    } else if !text.chars().all(|c| c.is_ascii_hexdigit()) {
        "expected only hexadecimal characters (0-9, a-f)".to_owned()
    } else {
        return Txid::from_str(text).map_err(|error| InputError::InvalidTxid {
            shown,
            reason: error.to_string(),
        });
    };
    Err(InputError::InvalidTxid { shown, reason })
}

/// Parses a raw transaction in hex.
///
/// # Errors
///
/// Returns [`InputError`] naming what is wrong.
pub fn parse_tx_hex(text: &str) -> Result<Transaction, InputError> {
    let text = text.trim();
    if looks_like_private_key(text) {
        return Err(InputError::PrivateKey);
    }
    consensus::encode::deserialize_hex(text).map_err(|error| InputError::InvalidTxHex {
        reason: error.to_string(),
    })
}

fn shorten(text: &str) -> String {
    let mut shown: String = text.chars().take(70).collect();
    if text.chars().count() > 70 {
        shown.push('…');
    }
    format!("{shown:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txid_parses() {
        let txid = "d4edb45b56543fcdfeee348f6b759cb11a73fda8e6efbdeed79a6b859b5866a7";
        assert_eq!(parse_txid(txid).expect("valid").to_string(), txid);
    }

    #[test]
    fn short_txid_is_rejected() {
        let error = parse_txid("abc").expect_err("too short");
        assert_eq!(
            error.to_string(),
            "invalid txid \"abc\": expected 64 hexadecimal characters, got 3"
        );
    }

    #[test]
    fn non_hex_txid_is_rejected() {
        let text = "z".repeat(64);
        let error = parse_txid(&text).expect_err("not hex");
        assert!(error.to_string().contains("only hexadecimal"));
    }

    #[test]
    fn private_key_is_not_echoed() {
        let wif = "KwDiBf89QgGbjEhKnhXJuH7LrciVrZi3qYjgd9M7rFU73sVHnoWn";
        let error = parse_txid(wif).expect_err("private key");
        assert_eq!(error, InputError::PrivateKey);
        assert!(!error.to_string().contains(wif));
        let xprv = "tprv8ZgxMBicQKsPe4wsMmdknqtC57oe5vmBhZRqtXXUTuRyGVaK8EtWFE7LN6HyEwhRfZ34NkPr4o3CgRR1QHbt7b4djxHHBRaBkqzAYLYfc6P";
        assert_eq!(parse_txid(xprv), Err(InputError::PrivateKey));
        let embedded = format!("my key is {wif}, please help");
        assert_eq!(parse_txid(&embedded), Err(InputError::PrivateKey));
        assert_eq!(
            parse_txid(&format!("key:{xprv}")),
            Err(InputError::PrivateKey)
        );
    }

    #[test]
    fn garbage_hex_is_rejected() {
        assert!(matches!(
            parse_tx_hex("0200"),
            Err(InputError::InvalidTxHex { .. })
        ));
    }
}
