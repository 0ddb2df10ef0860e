//! Checks `docker-compose.yml` without a Docker engine: it parses, names its services,
//! ports and volumes, publishes only on loopback, wires the services to each other, and
//! gives txdoctor a command line that txdoctor itself accepts.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Parser;
use serde_norway::Value;
use txdoctor::cli::{Cli, Command};
use txdoctor::config::Network;

fn compose() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("docker-compose.yml is readable");
    serde_norway::from_str(&text).expect("docker-compose.yml is valid YAML")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// The service's command as a list of strings.
fn command(compose: &Value, name: &str) -> Vec<String> {
    service(compose, name)["command"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{name}: the command is not a list"))
        .iter()
        .map(|arg| arg.as_str().expect("arguments are strings").to_owned())
        .collect()
}

/// The value of `--flag=value` or `-flag=value` in a command.
fn flag<'a>(command: &'a [String], flag: &str) -> Option<&'a str> {
    command
        .iter()
        .find_map(|arg| arg.strip_prefix(flag)?.strip_prefix('='))
}

#[test]
fn services_are_present() {
    let compose = compose();
    let names: BTreeSet<&str> = compose["services"]
        .as_mapping()
        .expect("services is a mapping")
        .keys()
        .map(|key| key.as_str().expect("service names are strings"))
        .collect();
    assert_eq!(names, BTreeSet::from(["bitcoind", "electrs", "txdoctor"]));
}

#[test]
fn ports_are_named_and_loopback_only() {
    let compose = compose();
    let mut names = BTreeSet::new();
    for (service_name, service) in compose["services"].as_mapping().expect("services") {
        let service_name = service_name.as_str().expect("name");
        let ports = service["ports"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{service_name}: no ports"));
        for port in ports {
            let name = port["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{service_name}: a port has no name"));
            assert!(
                names.insert(name.to_owned()),
                "port name {name} is used twice"
            );
            assert_eq!(
                port["host_ip"].as_str(),
                Some("127.0.0.1"),
                "{name}: host_ip"
            );
            assert!(port["target"].as_u64().is_some(), "{name}: target port");
            let published = port["published"].as_str().expect("published port");
            assert!(
                published.parse::<u16>().is_ok(),
                "{name}: published {published}"
            );
        }
    }
    assert_eq!(
        names,
        BTreeSet::from(["bitcoind-rpc", "electrum", "esplora", "txdoctor-api"].map(str::to_owned))
    );
}

#[test]
fn volumes_are_named_and_declared() {
    let compose = compose();
    let declared: BTreeSet<&str> = compose["volumes"]
        .as_mapping()
        .expect("top-level volumes")
        .keys()
        .map(|key| key.as_str().expect("volume names are strings"))
        .collect();
    let mut used = BTreeSet::new();
    for (service_name, service) in compose["services"].as_mapping().expect("services") {
        for mount in service["volumes"].as_sequence().into_iter().flatten() {
            let mount = mount.as_str().expect("short volume syntax");
            let source = mount.split(':').next().expect("a source");
            assert!(
                !source.starts_with('.') && !source.starts_with('/'),
                "{service_name:?}: {mount} is a bind mount, not a named volume"
            );
            used.insert(source);
        }
    }
    assert_eq!(used, declared, "every named volume is declared and used");
}

#[test]
fn services_point_at_each_other() {
    let compose = compose();
    let bitcoind = command(&compose, "bitcoind");
    assert!(
        bitcoind.iter().any(|arg| arg == "-regtest"),
        "bitcoind runs regtest"
    );
    let rpc_port = flag(&bitcoind, "-rpcport").expect("bitcoind sets -rpcport");

    let electrs = command(&compose, "electrs");
    assert_eq!(flag(&electrs, "--network"), Some("regtest"));
    assert_eq!(
        flag(&electrs, "--daemon-rpc-addr"),
        Some(format!("bitcoind:{rpc_port}").as_str())
    );
    assert!(electrs.iter().any(|arg| arg == "--jsonrpc-import"));
    let http_port = flag(&electrs, "--http-addr")
        .and_then(|addr| addr.rsplit(':').next())
        .expect("electrs serves Esplora over HTTP");

    let txdoctor = command(&compose, "txdoctor");
    assert_eq!(
        flag(&txdoctor, "--esplora"),
        Some(format!("http://electrs:{http_port}").as_str())
    );
    let depends = |name: &str| -> Vec<String> {
        service(&compose, name)["depends_on"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|dependency| dependency.as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(depends("electrs"), ["bitcoind"]);
    assert_eq!(depends("txdoctor"), ["electrs"]);
}

#[test]
fn txdoctor_accepts_its_command() {
    let compose = compose();
    let args = std::iter::once("txdoctor".to_owned()).chain(command(&compose, "txdoctor"));
    let cli = Cli::try_parse_from(args).expect("txdoctor parses the compose command");
    assert_eq!(cli.network, Some(Network::Regtest));
    let Command::Serve { listen } = cli.command else {
        panic!("the compose command is not serve");
    };
    let listen = listen.expect("a listen address");
    let published = &service(&compose, "txdoctor")["ports"][0];
    assert_eq!(published["target"].as_u64(), Some(u64::from(listen.port())));
}

#[test]
fn txdoctor_image_is_built_here() {
    let compose = compose();
    assert_eq!(service(&compose, "txdoctor")["build"].as_str(), Some("."));
    let dockerfile = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    let text = std::fs::read_to_string(dockerfile).expect("a Dockerfile next to the compose file");
    assert!(
        text.contains("--bin txdoctor"),
        "the Dockerfile builds txdoctor"
    );
}
