//! Probes cannot be turned against the operator or the cluster: an endless
//! body is a failed sample within the timeout (memory stays bounded), a
//! redirect is not followed unless asked, and then never to another origin,
//! so the probe's headers (which may carry Secrets) stay with the URL's own
//! origin. Real HTTP servers on loopback.

use firedrill::api::Probe;
use firedrill::probe::Prober;
use firedrill::slo::Outcome;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn client() -> kube::Client {
    // Plain http probes never use it.
    kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap()
}

fn http_probe(url: &str, extra: serde_json::Value) -> Probe {
    let mut http =
        serde_json::json!({"url": url, "headers": [{"name": "X-Token", "value": "s3cret"}]});
    if let (Some(h), Some(e)) = (http.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            h.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(serde_json::json!({ "http": http })).unwrap()
}

/// An HTTP server that answers every request with `answer(path)` and records
/// every request head it got.
async fn server(
    answer: impl Fn(&str, u16) -> Vec<u8> + Send + Sync + 'static,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(vec![]));
    let (s, answer) = (seen.clone(), Arc::new(answer));
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = l.accept().await.unwrap();
            let (s, answer) = (s.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                s.lock().unwrap().push(head);
                let _ = sock.write_all(&answer(&path, port)).await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn an_endless_body_is_a_failed_sample_within_the_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                // Endless: 64 KiB chunks until the client goes away.
                while sock.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    let probe = http_probe(
        &format!("http://127.0.0.1:{port}/"),
        serde_json::json!({"bodyContains": "ok"}),
    );
    let p = Prober::build(
        &probe,
        Duration::from_secs(5),
        &client(),
        &Default::default(),
        None,
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (outcome, why) = p.probe().await;
    assert_eq!(outcome, Outcome::Fail);
    assert!(
        why.as_deref().unwrap().contains("in the first 64 KiB"),
        "{why:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "it stopped reading at the cap: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn redirects_are_not_followed_unless_asked_and_never_to_another_origin() {
    // The target of a cross-origin redirect: it must never see the header.
    let (elsewhere, elsewhere_seen) = server(|_, _| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec()
    })
    .await;
    let (port, seen) = server(move |path, port| match path {
        "/away" => format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{elsewhere}/stolen\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
        "/here" => format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/final\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec(),
    })
    .await;
    let expect_200 = serde_json::json!({"expectedStatus": [200]});
    let build = |path: &str, follow: bool| {
        let mut extra = expect_200.clone();
        extra["followRedirects"] = follow.into();
        http_probe(&format!("http://127.0.0.1:{port}{path}"), extra)
    };

    // Not asked: the 302 itself is the answer (not 200: failed), nothing followed.
    let p = Prober::build(
        &build("/here", false),
        Duration::from_secs(2),
        &client(),
        &Default::default(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(p.probe().await, (Outcome::Fail, Some("HTTP 302".into())));
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.starts_with("GET /final"))
    );

    // Asked: followed within the origin, with the header.
    let p = Prober::build(
        &build("/here", true),
        Duration::from_secs(2),
        &client(),
        &Default::default(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(p.probe().await, (Outcome::Ok, None));
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|h| h.starts_with("GET /final") && h.contains("s3cret"))
    );

    // Asked, but to another origin: not followed; the header never leaves.
    let p = Prober::build(
        &build("/away", true),
        Duration::from_secs(2),
        &client(),
        &Default::default(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(p.probe().await, (Outcome::Fail, Some("HTTP 302".into())));
    assert!(
        elsewhere_seen.lock().unwrap().is_empty(),
        "the other origin was contacted: {:?}",
        elsewhere_seen.lock().unwrap()
    );
}
