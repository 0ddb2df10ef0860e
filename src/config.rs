//! Typed configuration: defaults, then a TOML file, then `TXDOCTOR_*` environment
//! variables and command-line flags (clap reads both), each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chain::BackendSpec;
use crate::chain::cache::CacheOptions;
use crate::chain::electrum::ElectrumOptions;
use crate::chain::esplora::EsploraOptions;
use crate::feerate::SatPerKvb;
use crate::policy::{PolicyVersion, RelayPolicy};

/// The Bitcoin network txdoctor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Bitcoin mainnet.
    #[default]
    Mainnet,
    /// Testnet version 4.
    Testnet4,
    /// The default signet.
    Signet,
    /// A local regression-test chain.
    Regtest,
}

impl Network {
    /// Returns the public Esplora API used when none is configured.
    pub fn default_esplora_url(self) -> &'static str {
        match self {
            Network::Mainnet => "https://mempool.space/api",
            Network::Testnet4 => "https://mempool.space/testnet4/api",
            Network::Signet => "https://mempool.space/signet/api",
            Network::Regtest => "http://127.0.0.1:3002",
        }
    }

    /// Returns the rust-bitcoin network.
    pub fn bitcoin(self) -> crate::bitcoin::Network {
        match self {
            Network::Mainnet => crate::bitcoin::Network::Bitcoin,
            Network::Testnet4 => crate::bitcoin::Network::Testnet4,
            Network::Signet => crate::bitcoin::Network::Signet,
            Network::Regtest => crate::bitcoin::Network::Regtest,
        }
    }
}

/// Everything configurable, with its defaults. `Debug` hides credentials in the URL.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Network of the backend.
    pub network: Network,
    /// Esplora base URL; the network's public API when unset and `backends` is empty.
    pub esplora_url: Option<String>,
    /// Backends tried in order: `http(s)://` URLs are Esplora APIs, `tcp://` and `ssl://`
    /// URLs Electrum servers. Empty means `esplora_url` alone.
    pub backends: Vec<String>,
    /// How long a failing backend is skipped at first, in seconds; it doubles while the
    /// backend keeps failing, up to 16 times.
    pub backend_backoff_secs: u64,
    /// Whether an Electrum server's TLS certificate must match its host name.
    pub electrum_validate_domain: bool,
    /// Address `serve` listens on.
    pub listen: SocketAddr,
    /// Time limit of one backend request, in seconds.
    pub timeout_secs: u64,
    /// Retries of a backend request after a 429, a 5xx or a failed connection.
    pub max_retries: u32,
    /// Backend requests in flight at once, per backend.
    pub max_in_flight: usize,
    /// Lifetime of cached mempool facts, in seconds.
    pub mempool_cache_secs: u64,
    /// Lifetime of cached confirmed transactions, in seconds.
    pub confirmed_cache_secs: u64,
    /// How long fetched facts may still be served, marked stale, while every backend is
    /// down, in seconds; 0 never serves them.
    pub stale_cache_secs: u64,
    /// Directory where diagnosed raw transactions are remembered; none keeps them in memory.
    pub history_dir: Option<PathBuf>,
    /// Relay policy used to price replacements and children.
    pub policy: PolicyConfig,
    /// Addresses derived ahead on each keychain when looking for the owner's scripts.
    pub lookahead: u32,
    /// Largest fee a bump may pay without `--force`, in satoshis.
    pub max_fee_sat: u64,
}

/// Relay policy overrides, in sat/kvB as Bitcoin Core's options take them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// `-minrelaytxfee`, sat/kvB.
    pub min_relay_fee_sat_per_kvb: u64,
    /// `-incrementalrelayfee`, sat/kvB.
    pub incremental_relay_fee_sat_per_kvb: u64,
    /// `-dustrelayfee`, sat/kvB.
    pub dust_relay_fee_sat_per_kvb: u64,
    /// Replacement rules to satisfy.
    pub version: PolicyVersion,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let policy = RelayPolicy::default();
        Self {
            min_relay_fee_sat_per_kvb: policy.min_relay_fee.0,
            incremental_relay_fee_sat_per_kvb: policy.incremental_relay_fee.0,
            dust_relay_fee_sat_per_kvb: policy.dust_relay_fee.0,
            version: PolicyVersion::Both,
        }
    }
}

impl PolicyConfig {
    /// Returns the relay policy these values describe.
    pub fn relay_policy(&self) -> RelayPolicy {
        RelayPolicy {
            min_relay_fee: SatPerKvb(self.min_relay_fee_sat_per_kvb),
            incremental_relay_fee: SatPerKvb(self.incremental_relay_fee_sat_per_kvb),
            dust_relay_fee: SatPerKvb(self.dust_relay_fee_sat_per_kvb),
            mempool_min_fee: SatPerKvb(self.min_relay_fee_sat_per_kvb),
            ..RelayPolicy::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: Network::Mainnet,
            esplora_url: None,
            backends: Vec::new(),
            backend_backoff_secs: 30,
            electrum_validate_domain: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            timeout_secs: 10,
            max_retries: 2,
            max_in_flight: 8,
            mempool_cache_secs: 10,
            confirmed_cache_secs: 3600,
            stale_cache_secs: 3600,
            history_dir: None,
            policy: PolicyConfig::default(),
            lookahead: 250,
            max_fee_sat: 1_000_000,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Config")
            .field("network", &self.network)
            .field("esplora_url", &self.esplora_url.as_deref().map(redact_url))
            .field(
                "backends",
                &self
                    .backends
                    .iter()
                    .map(|url| redact_url(url))
                    .collect::<Vec<_>>(),
            )
            .field("backend_backoff_secs", &self.backend_backoff_secs)
            .field("electrum_validate_domain", &self.electrum_validate_domain)
            .field("listen", &self.listen)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_retries", &self.max_retries)
            .field("max_in_flight", &self.max_in_flight)
            .field("mempool_cache_secs", &self.mempool_cache_secs)
            .field("confirmed_cache_secs", &self.confirmed_cache_secs)
            .field("stale_cache_secs", &self.stale_cache_secs)
            .field("history_dir", &self.history_dir)
            .field("policy", &self.policy)
            .field("lookahead", &self.lookahead)
            .field("max_fee_sat", &self.max_fee_sat)
            .finish()
    }
}

/// Returns `url` without a user name, password or query string, which may hold
/// credentials; what is left still tells which server it is.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "(unparsable URL)".to_owned();
    };
    let had_credentials = !parsed.username().is_empty() || parsed.password().is_some();
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let had_query = parsed.query().is_some();
    parsed.set_query(None);
    let mut shown = parsed.to_string().trim_end_matches('/').to_owned();
    if had_credentials || had_query {
        shown.push_str(" (credentials hidden)");
    }
    shown
}

/// Rejects backend URLs that cannot work: an Esplora base URL with a query string, to
/// which paths cannot be appended, and an Electrum URL without a port or with a user
/// name, which electrum-client would take as part of the host.
fn check_backend_url(url: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "backends",
        reason,
    };
    let parsed = reqwest::Url::parse(url)
        .map_err(|error| invalid(format!("{}: {error}", redact_url(url))))?;
    match parsed.scheme() {
        "http" | "https" if parsed.query().is_some() => Err(invalid(format!(
            "{} has a query string; paths are appended to an Esplora base URL, so give one without",
            redact_url(url)
        ))),
        "tcp" | "ssl" if !parsed.username().is_empty() || parsed.password().is_some() => {
            Err(invalid(format!(
                "{} has a user name or password, which Electrum URLs cannot carry",
                redact_url(url)
            )))
        }
        "tcp" | "ssl" if parsed.port().is_none() => Err(invalid(format!(
            "{} has no port; Electrum servers usually listen on 50001 (tcp) or 50002 (ssl)",
            redact_url(url)
        ))),
        _ => Ok(()),
    }
}

/// Largest policy fee rate accepted, 1 BTC/kvB: far above any real policy, and small
/// enough that fee arithmetic cannot overflow.
const MAX_POLICY_RATE_SAT_PER_KVB: u64 = 100_000_000;

/// Errors of configuration loading.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A value is out of range or malformed.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A backend URL has a scheme txdoctor cannot serve.
    #[error(
        "invalid backend URL {url}: expected http:// or https:// for Esplora, tcp:// or ssl:// for Electrum"
    )]
    InvalidBackend {
        /// The URL.
        url: String,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: toml::de::Error,
    },
}

impl Config {
    /// Loads `path`, or the defaults when there is none.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError`] when the file cannot be read or parsed.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks the values that parsing alone cannot.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::Invalid`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.effective_esplora_url();
        let scheme_ok = reqwest::Url::parse(&url)
            .is_ok_and(|parsed| matches!(parsed.scheme(), "http" | "https"));
        if !scheme_ok {
            let reason = format!("{} is not an http:// or https:// URL", redact_url(&url));
            return Err(ConfigError::Invalid {
                name: "esplora_url",
                reason,
            });
        }
        for url in self.backend_urls() {
            check_backend_url(&url)?;
        }
        let rates = [
            (
                "policy.min_relay_fee_sat_per_kvb",
                self.policy.min_relay_fee_sat_per_kvb,
            ),
            (
                "policy.incremental_relay_fee_sat_per_kvb",
                self.policy.incremental_relay_fee_sat_per_kvb,
            ),
            (
                "policy.dust_relay_fee_sat_per_kvb",
                self.policy.dust_relay_fee_sat_per_kvb,
            ),
        ];
        for (name, rate) in rates {
            if rate > MAX_POLICY_RATE_SAT_PER_KVB {
                let reason =
                    format!("{rate} sat/kvB is above the maximum of {MAX_POLICY_RATE_SAT_PER_KVB}");
                return Err(ConfigError::Invalid { name, reason });
            }
        }
        Ok(())
    }

    /// Returns the Esplora URL in effect.
    pub fn effective_esplora_url(&self) -> String {
        self.esplora_url
            .clone()
            .unwrap_or_else(|| self.network.default_esplora_url().to_owned())
    }

    /// Options for the Esplora client.
    pub fn esplora_options(&self) -> EsploraOptions {
        self.esplora_options_for(&self.effective_esplora_url())
    }

    fn esplora_options_for(&self, url: &str) -> EsploraOptions {
        EsploraOptions {
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            max_retries: self.max_retries,
            max_in_flight: self.max_in_flight.max(1),
            ..EsploraOptions::new(url)
        }
    }

    /// Settings of the bump planner.
    pub fn bump_config(&self) -> crate::bump::BumpConfig {
        crate::bump::BumpConfig {
            network: self.network,
            lookahead: self.lookahead,
            max_fee_sat: self.max_fee_sat,
        }
    }

    /// Returns the backend URLs in the order they are tried.
    pub fn backend_urls(&self) -> Vec<String> {
        if self.backends.is_empty() {
            vec![self.effective_esplora_url()]
        } else {
            self.backends.clone()
        }
    }

    /// Returns the backends in the order they are tried, typed by URL scheme.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::InvalidBackend`] for a URL of another scheme.
    pub fn backend_specs(&self) -> Result<Vec<BackendSpec>, ConfigError> {
        self.backend_urls()
            .into_iter()
            .map(|url| {
                if url.starts_with("http://") || url.starts_with("https://") {
                    Ok(BackendSpec::Esplora(self.esplora_options_for(&url)))
                } else if url.starts_with("tcp://") || url.starts_with("ssl://") {
                    Ok(BackendSpec::Electrum(ElectrumOptions {
                        timeout: Duration::from_secs(self.timeout_secs.max(1)),
                        max_in_flight: self.max_in_flight.max(1),
                        validate_domain: self.electrum_validate_domain,
                        ..ElectrumOptions::new(url)
                    }))
                } else {
                    Err(ConfigError::InvalidBackend {
                        url: redact_url(&url),
                    })
                }
            })
            .collect()
    }

    /// Returns how long a failing backend is skipped at first.
    pub fn backend_backoff(&self) -> Duration {
        Duration::from_secs(self.backend_backoff_secs)
    }

    /// Options for the cache.
    pub fn cache_options(&self) -> CacheOptions {
        CacheOptions {
            mempool_ttl: Duration::from_secs(self.mempool_cache_secs),
            confirmed_ttl: Duration::from_secs(self.confirmed_cache_secs),
            stale_ttl: Duration::from_secs(self.stale_cache_secs),
            ..CacheOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults() {
        let config: Config = toml::from_str(
            "network = \"regtest\"\nesplora_url = \"http://127.0.0.1:3002\"\n[policy]\nversion = \"v31\"\n",
        )
        .expect("valid config");
        assert_eq!(config.network, Network::Regtest);
        assert_eq!(config.policy.version, PolicyVersion::V31);
        assert_eq!(config.policy.incremental_relay_fee_sat_per_kvb, 100);
        assert_eq!(config.timeout_secs, 10);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let parsed: Result<Config, _> = toml::from_str("esplora = \"x\"\n");
        assert!(parsed.is_err());
    }

    #[test]
    fn credentials_are_redacted() {
        let config = Config {
            esplora_url: Some(
                "https://admin:SuperSecret@example.invalid/api?apikey=KEY123".to_owned(),
            ),
            backends: vec!["ssl://admin:SuperSecret@example.invalid:50002".to_owned()],
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("SuperSecret"), "{shown}");
        assert!(!shown.contains("KEY123"), "{shown}");
        assert!(!shown.contains("admin"), "{shown}");
        assert!(
            shown.contains("https://example.invalid/api (credentials hidden)"),
            "{shown}"
        );
    }

    #[test]
    fn oversized_policy_rate_is_rejected() {
        let mut config = Config::default();
        config.policy.min_relay_fee_sat_per_kvb = u64::MAX;
        let error = config.validate().expect_err("too large");
        assert!(
            error
                .to_string()
                .contains("policy.min_relay_fee_sat_per_kvb"),
            "{error}"
        );
    }

    #[test]
    fn unusable_backend_urls_are_rejected() {
        for url in [
            "http://127.0.0.1:3002/?token=secret",
            "tcp://user:pass@127.0.0.1:50001",
            "tcp://127.0.0.1",
        ] {
            let config = Config {
                backends: vec![url.to_owned()],
                ..Config::default()
            };
            let error = config.validate().expect_err(url);
            assert!(
                !error.to_string().contains("secret") && !error.to_string().contains("pass@"),
                "{error}"
            );
        }
        let config = Config {
            backends: vec!["tcp://127.0.0.1:50001".to_owned()],
            ..Config::default()
        };
        assert!(config.validate().is_ok());
    }

    #[test]
    fn non_http_url_is_rejected() {
        let config = Config {
            esplora_url: Some("ftp://127.0.0.1/api".to_owned()),
            ..Config::default()
        };
        assert!(config.validate().is_err());
        let config = Config {
            esplora_url: Some("127.0.0.1:3002".to_owned()),
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn backends_keep_their_order() {
        let config: Config = toml::from_str(
            "backends = [\"tcp://127.0.0.1:50001\", \"http://127.0.0.1:3002\", \"ssl://127.0.0.1:50002\"]\n",
        )
        .expect("valid config");
        let specs = config.backend_specs().expect("valid backends");
        assert_eq!(specs.len(), 3);
        assert!(matches!(specs[0], BackendSpec::Electrum(_)));
        assert!(matches!(specs[1], BackendSpec::Esplora(_)));
        assert!(matches!(specs[2], BackendSpec::Electrum(_)));
    }

    #[test]
    fn unknown_backend_scheme_is_rejected() {
        let config = Config {
            backends: vec!["ftp://127.0.0.1".to_owned()],
            ..Config::default()
        };
        assert!(matches!(
            config.backend_specs(),
            Err(ConfigError::InvalidBackend { .. })
        ));
    }

    #[test]
    fn no_backends_means_esplora_url() {
        let config = Config {
            esplora_url: Some("http://127.0.0.1:3002".to_owned()),
            ..Config::default()
        };
        assert_eq!(
            config.backend_urls(),
            vec!["http://127.0.0.1:3002".to_owned()]
        );
    }

    #[test]
    fn network_picks_default_url() {
        let config = Config {
            network: Network::Signet,
            ..Config::default()
        };
        assert_eq!(
            config.effective_esplora_url(),
            "https://mempool.space/signet/api"
        );
    }
}
