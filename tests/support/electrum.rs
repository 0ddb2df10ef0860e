//! An in-process Electrum server: newline-delimited JSON-RPC over TCP or TLS on a loopback
//! port, replaying the answers recorded in `electrum.json`, with faults on request.
//!
//! Each request line is answered on its own task, so requests that the client pipelines on
//! one connection are in flight together, as on a real server, and the server can count
//! how many the client has outstanding at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Recorded answers: `method params` to a result or an error message.
#[derive(Clone, Default)]
pub struct ElectrumAnswers {
    answers: HashMap<String, Result<Value, String>>,
    protocol_version: String,
}

impl ElectrumAnswers {
    /// Loads `fixtures/regtest/NAME/electrum.json`.
    pub fn load(name: &str) -> Self {
        let path = super::fixture_path(&format!("regtest/{name}/electrum.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let calls: Vec<Value> = serde_json::from_str(&text).expect("electrum.json is a list");
        let mut answers = Self {
            answers: HashMap::new(),
            protocol_version: "1.4".to_owned(),
        };
        for call in calls {
            let method = call["method"].as_str().expect("method");
            let params = call["params"].as_array().cloned().unwrap_or_default();
            let answer = match call.get("error") {
                Some(error) => Err(error
                    .as_str()
                    .map_or_else(|| error.to_string(), str::to_owned)),
                None => Ok(call["result"].clone()),
            };
            if method == "server.version" {
                if let Some(version) = call["result"][1].as_str() {
                    answers.protocol_version = version.to_owned();
                }
                continue;
            }
            answers.answers.insert(key(method, &params), answer);
        }
        answers
    }

    /// Adds or replaces the answer to `method` with `params`.
    pub fn insert(&mut self, method: &str, params: &[Value], answer: Result<Value, String>) {
        self.answers.insert(key(method, params), answer);
    }

    /// Returns the recorded answer to `method` with `params`.
    pub fn get(&self, method: &str, params: &[Value]) -> Option<&Result<Value, String>> {
        self.answers.get(&key(method, params))
    }

    /// Makes the server claim protocol `version` in `server.version`.
    pub fn set_protocol_version(&mut self, version: &str) {
        self.protocol_version = version.to_owned();
    }

    /// Returns every recorded raw transaction with its txid.
    pub fn transactions(&self) -> Vec<(String, String)> {
        self.answers
            .iter()
            .filter_map(|(key, answer)| {
                let txid = key.strip_prefix("blockchain.transaction.get ")?;
                let hex = answer.as_ref().ok()?.as_str()?;
                let txid: Vec<String> = serde_json::from_str(txid).ok()?;
                Some((txid.first()?.clone(), hex.to_owned()))
            })
            .collect()
    }
}

/// The lookup key: `blockchain.transaction.get` is recorded with a `false` verbose flag
/// that electrum-client leaves out, so trailing `false` parameters are dropped.
fn key(method: &str, params: &[Value]) -> String {
    let mut params = params.to_vec();
    while params.last() == Some(&Value::Bool(false)) {
        params.pop();
    }
    format!("{method} {}", Value::Array(params))
}

/// A fault the server injects on every request whose method contains the pattern.
#[derive(Clone, Debug)]
pub enum ElectrumFault {
    /// Waits before answering.
    Delay(Duration),
    /// Closes the connection instead of answering.
    Reset,
    /// Answers with a line that is not JSON.
    Malformed,
    /// Writes the first half of the answer and closes the connection.
    Truncated,
    /// Answers with a JSON-RPC error.
    ServerError,
    /// Answers `blockchain.transaction.get` with another recorded transaction.
    WrongTransaction,
}

/// A running fake Electrum server.
pub struct ElectrumReplay {
    /// `tcp://127.0.0.1:PORT`, or `ssl://127.0.0.1:PORT` for a TLS server.
    pub url: String,
    requests: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    methods: Arc<Mutex<HashMap<String, usize>>>,
}

impl ElectrumReplay {
    /// JSON-RPC requests received, `server.version` included.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests received per method.
    pub fn methods(&self) -> HashMap<String, usize> {
        self.methods.lock().expect("methods lock").clone()
    }

    /// Maximum number of requests in progress at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

struct ServerState {
    answers: ElectrumAnswers,
    faults: Vec<(String, ElectrumFault)>,
    requests: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    methods: Arc<Mutex<HashMap<String, usize>>>,
}

/// Starts a server replaying `answers`.
pub async fn start(answers: ElectrumAnswers) -> ElectrumReplay {
    start_with_faults(answers, Vec::new()).await
}

/// Starts a server replaying `answers` that injects `faults` on matching methods.
pub async fn start_with_faults(
    answers: ElectrumAnswers,
    faults: Vec<(String, ElectrumFault)>,
) -> ElectrumReplay {
    listen(answers, faults, None).await
}

/// Starts a server replaying `answers` over TLS, with a self-signed certificate for
/// `localhost` and `127.0.0.1` made for this server alone. No root store contains it, so
/// a client accepts it only when certificate validation is off.
pub async fn start_tls(answers: ElectrumAnswers) -> ElectrumReplay {
    listen(answers, Vec::new(), Some(self_signed_acceptor())).await
}

fn self_signed_acceptor() -> TlsAcceptor {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).expect("certificate generates");
    let certificate = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    // The provider is named here because rustls is built with both ring and aws-lc-rs in
    // this dependency tree, and then it has no default to pick.
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .expect("certificate and key match");
    TlsAcceptor::from(Arc::new(config))
}

async fn listen(
    answers: ElectrumAnswers,
    faults: Vec<(String, ElectrumFault)>,
    tls: Option<TlsAcceptor>,
) -> ElectrumReplay {
    let state = Arc::new(ServerState {
        answers,
        faults,
        requests: Arc::new(AtomicUsize::new(0)),
        in_flight: Arc::new(AtomicUsize::new(0)),
        max_in_flight: Arc::new(AtomicUsize::new(0)),
        methods: Arc::new(Mutex::new(HashMap::new())),
    });
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let scheme = if tls.is_some() { "ssl" } else { "tcp" };
    let replay = ElectrumReplay {
        url: format!("{scheme}://{address}"),
        requests: state.requests.clone(),
        in_flight: state.in_flight.clone(),
        max_in_flight: state.max_in_flight.clone(),
        methods: state.methods.clone(),
    };
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Answers go out line by line; without this, Nagle's algorithm holds each
            // small line back until the client acknowledges the previous one.
            let _ = stream.set_nodelay(true);
            tokio::spawn(accept(state.clone(), stream, tls.clone()));
        }
    });
    replay
}

/// Serves one connection, after a TLS handshake when `tls` is set. A failed handshake,
/// such as a client that rejects the certificate, closes the connection.
async fn accept(state: Arc<ServerState>, stream: TcpStream, tls: Option<TlsAcceptor>) {
    match tls {
        None => serve_connection(state, stream).await,
        Some(acceptor) => {
            if let Ok(stream) = acceptor.accept(stream).await {
                serve_connection(state, stream).await;
            }
        }
    }
}

async fn serve_connection<S>(state: Arc<ServerState>, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let writer: Box<dyn AsyncWrite + Send + Unpin> = Box::new(writer);
    let writer = Arc::new(tokio::sync::Mutex::new(Some(writer)));
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(request) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let state = state.clone();
        let writer = writer.clone();
        tokio::spawn(async move { answer(&state, request, &writer).await });
    }
}

type SharedWriter = Arc<tokio::sync::Mutex<Option<Box<dyn AsyncWrite + Send + Unpin>>>>;

async fn answer(state: &ServerState, request: Value, writer: &SharedWriter) {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let method = request["method"].as_str().unwrap_or_default().to_owned();
    *state
        .methods
        .lock()
        .expect("methods lock")
        .entry(method.clone())
        .or_default() += 1;
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let line = respond(state, &request, &method).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut guard = writer.lock().await;
    let Some(stream) = guard.as_mut() else {
        return;
    };
    // A TLS stream may keep written bytes in its buffer until it is flushed.
    let closed = match line {
        Reply::Line(text) => {
            let written = stream.write_all(format!("{text}\n").as_bytes()).await;
            written.is_err() || stream.flush().await.is_err()
        }
        Reply::Partial(text) => {
            let _ = stream.write_all(text.as_bytes()).await;
            let _ = stream.flush().await;
            true
        }
        Reply::Close => true,
    };
    if closed {
        if let Some(mut stream) = guard.take() {
            let _ = stream.shutdown().await;
        }
    }
}

enum Reply {
    Line(String),
    Partial(String),
    Close,
}

async fn respond(state: &ServerState, request: &Value, method: &str) -> Reply {
    let id = request["id"].clone();
    let params = request["params"].as_array().cloned().unwrap_or_default();
    let mut result = match method {
        "server.version" => Ok(json!(["txdoctor-fake", state.answers.protocol_version])),
        _ => match state.answers.get(method, &params) {
            Some(answer) => answer.clone(),
            None => Err(format!(
                "no recorded answer for {method} {}",
                Value::Array(params.clone())
            )),
        },
    };
    for (pattern, fault) in &state.faults {
        if !method.contains(pattern.as_str()) {
            continue;
        }
        match fault {
            ElectrumFault::Delay(delay) => tokio::time::sleep(*delay).await,
            ElectrumFault::Reset => return Reply::Close,
            ElectrumFault::Malformed => {
                return Reply::Line("{\"jsonrpc\": \"2.0\", \"id\": ".to_owned());
            }
            ElectrumFault::Truncated => {
                let full = envelope(&id, &result).to_string();
                return Reply::Partial(full[..full.len() / 2].to_owned());
            }
            ElectrumFault::ServerError => result = Err("internal error".to_owned()),
            ElectrumFault::WrongTransaction => {
                let requested = params.first().and_then(Value::as_str).unwrap_or_default();
                if let Some((_, hex)) = state
                    .answers
                    .transactions()
                    .into_iter()
                    .find(|(txid, _)| txid != requested)
                {
                    result = Ok(Value::String(hex));
                }
            }
        }
    }
    Reply::Line(envelope(&id, &result).to_string())
}

/// Builds a JSON-RPC 2.0 response. The recording kept only an error's message, so the
/// code is 1.
fn envelope(id: &Value, result: &Result<Value, String>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(message) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": 1, "message": message}})
        }
    }
}
