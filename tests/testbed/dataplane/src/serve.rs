//! The test server a pod runs: it answers every HTTP request with 200 "ok"
//! while each of its dependencies answers 200, and with 503 naming the
//! first one that does not. That is how messaging depends on login.
//!
//! A server that keeps its records in a store (`--store-url`, a member of
//! `store.rs` by Service name) passes `/records` requests (`POST /records`,
//! `GET /records/{id}`) on to it once every dependency answers, as a
//! payments API writes to its ledger after signing the user in.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Config {
    pub listen: String,
    pub depends: Vec<String>,
    pub hosts: Option<PathBuf>,
    pub startup: Duration,
    pub name: String,
    /// A member of a stateful store instead of a stateless server.
    pub store: Option<crate::store::Config>,
    /// Where `/records` requests are passed on to (a store's base URL).
    pub store_url: Option<String>,
}

/// How long a dependency may take to answer.
const DEPENDENCY_TIMEOUT: Duration = Duration::from_millis(1500);

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // A real container takes a moment to start.
    tokio::time::sleep(cfg.startup).await;
    let listener = TcpListener::bind(&cfg.listen).await?;
    let mut cfg = cfg;
    if let Some(store) = cfg.store.take() {
        return crate::store::run(listener, store).await;
    }
    let cfg = std::sync::Arc::new(cfg);
    loop {
        let (sock, _) = listener.accept().await?;
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let _ = answer(sock, &cfg).await;
        });
    }
}

async fn read_head(sock: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

async fn answer(mut sock: TcpStream, cfg: &Config) -> std::io::Result<()> {
    let (head, request) = read_head_and_body(&mut sock).await?;
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or("GET").to_string();
    let path = words.next().unwrap_or("/");
    let (status, body) = match (first_failing(cfg).await, &cfg.store_url) {
        (Some(why), _) => (
            "503 Service Unavailable".to_string(),
            format!("{}: {why}\n", cfg.name),
        ),
        (None, Some(store)) if path == "/records" || path.starts_with("/records/") => {
            let url = format!("{}{path}", store.trim_end_matches('/'));
            match crate::store::request_with(cfg.hosts.as_ref(), &method, &url, &request).await {
                Ok((code, text)) => (format!("{code} {}", reason(code)), text),
                Err(e) => (
                    "502 Bad Gateway".to_string(),
                    format!("{}: {store}: {e}\n", cfg.name),
                ),
            }
        }
        (None, _) => ("200 OK".to_string(), format!("ok {}\n", cfg.name)),
    };
    let body = if method == "HEAD" {
        String::new()
    } else {
        body
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}

/// The reason phrase of a status code the store answers with.
fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Other",
    }
}

/// A request's head and its body (as long as its Content-Length says, up to 1 MiB).
pub async fn read_head_and_body(sock: &mut TcpStream) -> std::io::Result<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            break buf.len();
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break buf.len();
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0)
        .min(1 << 20);
    while buf.len() < end + length {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[end..(end + length).min(buf.len())]).into_owned();
    Ok((head, body))
}

/// The first dependency that does not answer 200, and why.
async fn first_failing(cfg: &Config) -> Option<String> {
    if cfg.depends.is_empty() {
        return None;
    }
    let hosts = read_hosts(cfg.hosts.as_ref());
    for url in &cfg.depends {
        match tokio::time::timeout(DEPENDENCY_TIMEOUT, get_status(url, &hosts)).await {
            Ok(Ok(200)) => {}
            Ok(Ok(code)) => return Some(format!("{url} answered {code}")),
            Ok(Err(e)) => return Some(format!("{url}: {e}")),
            Err(_) => return Some(format!("{url}: no answer within {DEPENDENCY_TIMEOUT:?}")),
        }
    }
    None
}

/// name → address, from a hosts file (`ADDR NAME...` lines).
pub fn read_hosts(path: Option<&PathBuf>) -> HashMap<String, String> {
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return HashMap::new();
    };
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(addr) = words.next() else { continue };
        if addr.starts_with('#') {
            continue;
        }
        for name in words {
            out.insert(name.to_string(), addr.to_string());
        }
    }
    out
}

pub async fn get_status(url: &str, hosts: &HashMap<String, String>) -> anyhow::Result<u16> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// dependencies"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>()?),
        None => (authority, 80),
    };
    let addr = hosts.get(host).map(String::as_str).unwrap_or(host);
    let mut sock = TcpStream::connect((addr, port)).await?;
    sock.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let head = read_head(&mut sock).await?;
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP answer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, Replication, request_with};

    /// A free loopback address (bound, then let go).
    fn free_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    async fn wait_up(url: &str) {
        for _ in 0..100 {
            if request_with(None, "GET", url, "").await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{url} never answered");
    }

    #[tokio::test]
    async fn records_are_passed_on_to_the_store_only_while_the_dependencies_answer() {
        let dir = std::env::temp_dir().join(format!("serve-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store_url = format!("http://{}", store_listener.local_addr().unwrap());
        tokio::spawn(store::run(
            store_listener,
            store::Config {
                name: "ledger".into(),
                primary: true,
                peer: None,
                replication: Replication::Sync,
                data: dir.join("records"),
                hosts: None,
                failover: Duration::from_secs(1),
            },
        ));
        // A dependency that answers 200 until it is stopped.
        let dep_addr = free_addr();
        let dep_url = format!("http://{dep_addr}/healthz");
        let dep = tokio::spawn(run(Config {
            listen: dep_addr,
            depends: vec![],
            hosts: None,
            startup: Duration::ZERO,
            name: "login".into(),
            store: None,
            store_url: None,
        }));
        let front = free_addr();
        tokio::spawn(run(Config {
            listen: front.clone(),
            depends: vec![dep_url.clone()],
            hosts: None,
            startup: Duration::ZERO,
            name: "checkout".into(),
            store: None,
            store_url: Some(store_url.clone()),
        }));
        let front = format!("http://{front}");
        wait_up(&dep_url).await;
        wait_up(&front).await;

        let (code, _) = request_with(None, "POST", &format!("{front}/records"), r#"{"id":"r1"}"#)
            .await
            .unwrap();
        assert_eq!(code, 201);
        let (code, body) = request_with(None, "GET", &format!("{store_url}/records/r1"), "")
            .await
            .unwrap();
        assert_eq!(
            (code, body.contains("r1")),
            (200, true),
            "kept in the store"
        );
        let (code, body) = request_with(None, "GET", &format!("{front}/records/r1"), "")
            .await
            .unwrap();
        assert_eq!(
            (code, body.contains("r1")),
            (200, true),
            "read through the front"
        );
        let (code, _) = request_with(None, "GET", &format!("{front}/records/nope"), "")
            .await
            .unwrap();
        assert_eq!(code, 404);
        let (code, body) = request_with(None, "GET", &format!("{front}/healthz"), "")
            .await
            .unwrap();
        assert_eq!(
            (code, body.as_str()),
            (200, "ok checkout\n"),
            "not passed on"
        );

        // The dependency gone: refused, and nothing reaches the store.
        dep.abort();
        let _ = dep.await;
        let (code, _) = request_with(None, "POST", &format!("{front}/records"), r#"{"id":"r2"}"#)
            .await
            .unwrap();
        assert_eq!(code, 503);
        let (code, _) = request_with(None, "GET", &format!("{store_url}/records/r2"), "")
            .await
            .unwrap();
        assert_eq!(code, 404);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
