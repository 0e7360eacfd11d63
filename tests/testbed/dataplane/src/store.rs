//! A stateful service for drills that measure lost writes: one member of a
//! store with a primary and a standby, each a pod.
//!
//! - `POST /records` with a JSON body carrying `"id"` writes a record and
//!   answers 201; `GET /records/{id}` answers it, or 404.
//! - The leader (the primary, until it is lost) serves them; a follower
//!   passes every request on to its peer, and takes over (is promoted) once
//!   the peer has not answered for the failover time.
//! - Replication, to a peer that follows: `sync` sends each write to the
//!   standby before acknowledging it (a write the standby does not confirm
//!   is refused); a leader whose peer is gone writes alone;
//!   `async:2s` acknowledges at once and sends it 2 s later, so the writes
//!   of the last 2 s before the primary's loss never reach the standby.
//! - Each member keeps its records in a file, as on a volume, so a primary
//!   that comes back after the zone's restore still has them; it asks its
//!   peer first and follows it if the peer was promoted meanwhile.

use crate::serve::{read_head_and_body, read_hosts};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Replication {
    Sync,
    Async(Duration),
}

impl Replication {
    /// `sync` or `async:2s` (`async` alone: no lag).
    pub fn parse(s: &str) -> Option<Replication> {
        match s.split_once(':') {
            None if s == "sync" => Some(Replication::Sync),
            None if s == "async" => Some(Replication::Async(Duration::ZERO)),
            Some(("async", lag)) => Some(Replication::Async(crate::parse_secs(lag))),
            _ => None,
        }
    }
}

pub struct Config {
    pub name: String,
    /// Whether this member starts as the primary.
    pub primary: bool,
    /// The other member's base URL, by Service name (none: no standby).
    pub peer: Option<String>,
    pub replication: Replication,
    /// The file this member keeps its records in.
    pub data: PathBuf,
    pub hosts: Option<PathBuf>,
    /// How long the leader may not answer before a follower takes over.
    pub failover: Duration,
}

struct Member {
    cfg: Config,
    leader: AtomicBool,
    /// The leader's view: its peer answers as a follower.
    peer_follows: AtomicBool,
    records: Mutex<HashMap<String, String>>,
}

/// How long one request to the peer may take.
const PEER_TIMEOUT: Duration = Duration::from_millis(800);

pub async fn run(listener: TcpListener, cfg: Config) -> anyhow::Result<()> {
    let records = load(&cfg.data);
    let peer_leads = match &cfg.peer {
        Some(peer) => matches!(
            request(&cfg, "GET", &format!("{peer}/_store/role"), "").await,
            Ok((200, body)) if body.trim() == "leader"
        ),
        None => false,
    };
    let member = Arc::new(Member {
        leader: AtomicBool::new(cfg.primary && !peer_leads),
        peer_follows: AtomicBool::new(false),
        cfg,
        records: Mutex::new(records),
    });
    tokio::spawn(watch_peer(member.clone()));
    loop {
        let (sock, _) = listener.accept().await?;
        let member = member.clone();
        tokio::spawn(async move {
            let _ = answer(sock, &member).await;
        });
    }
}

/// Watch the peer. A leader replicates only to a peer that follows it (a
/// lost standby leaves it writing alone, as a store that degrades rather
/// than stops would). A follower takes over once its peer, the leader, has
/// not answered for the failover time.
async fn watch_peer(m: Arc<Member>) {
    let Some(peer) = m.cfg.peer.clone() else {
        return;
    };
    let mut since: Option<tokio::time::Instant> = None;
    loop {
        let role = match request(&m.cfg, "GET", &format!("{peer}/_store/role"), "").await {
            Ok((200, body)) => Some(body.trim().to_string()),
            _ => None,
        };
        if m.leader.load(Ordering::Relaxed) {
            m.peer_follows
                .store(role.as_deref() == Some("follower"), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if role.as_deref() == Some("leader") {
            since = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let first = *since.get_or_insert_with(tokio::time::Instant::now);
        if first.elapsed() >= m.cfg.failover {
            m.leader.store(true, Ordering::Relaxed);
            eprintln!(
                "{}: promoted: the leader has not answered for {:?}",
                m.cfg.name, m.cfg.failover
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn answer(mut sock: TcpStream, m: &Member) -> std::io::Result<()> {
    let (head, body) = read_head_and_body(&mut sock).await?;
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or("GET").to_string();
    let path = words.next().unwrap_or("/").to_string();
    let leader = m.leader.load(Ordering::Relaxed);
    let (status, text) = match (method.as_str(), path.as_str()) {
        ("GET", "/_store/role") => (200, if leader { "leader" } else { "follower" }.to_string()),
        ("POST", "/_store/replicate") => match body.split_once('\n') {
            Some((id, record)) => {
                keep(m, id, record);
                (200, String::new())
            }
            None => (400, "want id\\nrecord\n".into()),
        },
        (_, p) if (p == "/records" || p.starts_with("/records/")) && !leader => {
            pass_on(m, &method, &path, &body).await
        }
        ("POST", "/records") => write(m, &body).await,
        ("GET", p) if p.starts_with("/records/") => {
            let id = &p["/records/".len()..];
            match m.records.lock().unwrap().get(id) {
                Some(record) => (200, record.clone()),
                None => (404, format!("no record {id}\n")),
            }
        }
        _ => (
            200,
            format!(
                "ok {} {}\n",
                m.cfg.name,
                if leader { "leader" } else { "follower" }
            ),
        ),
    };
    let reason = match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}

/// The leader's write: replicated as configured, kept, acknowledged.
async fn write(m: &Member, body: &str) -> (u16, String) {
    let Some(id) = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("id")?.as_str().map(String::from))
    else {
        return (400, "the body must be JSON with an \"id\"\n".into());
    };
    let record = body.replace('\n', " ");
    if let Some(peer) = m
        .cfg
        .peer
        .as_ref()
        .filter(|_| m.peer_follows.load(Ordering::Relaxed))
    {
        let url = format!("{peer}/_store/replicate");
        let payload = format!("{id}\n{record}");
        match m.cfg.replication {
            Replication::Sync => match request(&m.cfg, "POST", &url, &payload).await {
                Ok((200, _)) => {}
                Ok((code, _)) => return (503, format!("the standby answered {code}\n")),
                Err(e) => return (503, format!("the standby did not confirm: {e}\n")),
            },
            Replication::Async(lag) => {
                let cfg_hosts = m.cfg.hosts.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(lag).await;
                    let _ = request_with(cfg_hosts.as_ref(), "POST", &url, &payload).await;
                });
            }
        }
    }
    keep(m, &id, &record);
    (201, format!("{{\"id\":\"{id}\"}}\n"))
}

/// A follower passes a request on to the leader.
async fn pass_on(m: &Member, method: &str, path: &str, body: &str) -> (u16, String) {
    let Some(peer) = &m.cfg.peer else {
        return (503, "no leader\n".into());
    };
    match request(&m.cfg, method, &format!("{peer}{path}"), body).await {
        Ok(answer) => answer,
        Err(e) => (503, format!("the leader did not answer: {e}\n")),
    }
}

/// Keep a record, in memory and in the member's file.
fn keep(m: &Member, id: &str, record: &str) {
    let mut records = m.records.lock().unwrap();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&m.cfg.data)
    {
        let _ = writeln!(f, "{id}\t{record}");
    }
    records.insert(id.to_string(), record.to_string());
}

fn load(path: &PathBuf) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, r)| (id.to_string(), r.to_string()))
        .collect()
}

async fn request(
    cfg: &Config,
    method: &str,
    url: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    request_with(cfg.hosts.as_ref(), method, url, body).await
}

/// One HTTP/1.1 request to `url` (names looked up in `hosts` first): the
/// status and the body.
pub(crate) async fn request_with(
    hosts: Option<&PathBuf>,
    method: &str,
    url: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let hosts = read_hosts(hosts);
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// peers"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>()?),
        None => (authority, 80),
    };
    let addr = hosts
        .get(host)
        .map(String::as_str)
        .unwrap_or(host)
        .to_string();
    let exchange = async {
        let mut sock = TcpStream::connect((addr.as_str(), port)).await?;
        sock.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
        let mut out = Vec::new();
        sock.read_to_end(&mut out).await?;
        anyhow::Ok(String::from_utf8_lossy(&out).into_owned())
    };
    let out = tokio::time::timeout(PEER_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {PEER_TIMEOUT:?}"))??;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP answer"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_is_sync_or_async_with_a_lag() {
        assert_eq!(Replication::parse("sync"), Some(Replication::Sync));
        assert_eq!(
            Replication::parse("async:2s"),
            Some(Replication::Async(Duration::from_secs(2)))
        );
        assert_eq!(
            Replication::parse("async"),
            Some(Replication::Async(Duration::ZERO))
        );
        assert_eq!(Replication::parse("eventually"), None);
    }
}
