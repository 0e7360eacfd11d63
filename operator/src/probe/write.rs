//! The write probe: a unique record written every interval through the
//! service's own API (`POST url`), each acknowledged one logged in the
//! experiment's [`WriteLog`], and after the drill every acknowledged one
//! read back (`GET readUrl`) with a bounded number of reads in flight and a
//! deadline. A read that fails is an error, never a kept or a lost write.

use super::Env;
use super::http::{client_and_headers, http_error, read_capped};
use crate::api::WriteProbe;
use crate::canary::{Read, Readback, WriteLog};
use crate::slo::Outcome;
use futures::StreamExt;
use kube::Client;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most of a read-back answer searched for the id.
const READ_CAP: usize = 64 * 1024;
/// How often a read that failed is tried, in all.
const READ_ATTEMPTS: u32 = 3;

/// A write probe ready to run: header Secrets read, client built.
pub struct Write {
    client: reqwest::Client,
    url: String,
    read_url: String,
    body: String,
    content_type: String,
    headers: Vec<(String, String)>,
    acknowledged: Vec<u16>,
    concurrency: usize,
    log: Arc<Mutex<WriteLog>>,
}

impl Write {
    /// Read the Secrets `w` names and build its client; acknowledged writes
    /// go into `log`.
    pub(super) async fn build(
        w: &WriteProbe,
        timeout: Duration,
        client: &Client,
        env: &Env,
        log: Arc<Mutex<WriteLog>>,
    ) -> Result<Write, String> {
        let (client, headers) = client_and_headers(
            &w.url,
            &w.headers,
            w.tls.as_ref(),
            false,
            timeout,
            client,
            env,
        )
        .await?;
        Ok(Write {
            client,
            url: w.url.clone(),
            read_url: w.read_url.clone(),
            body: w.body.clone(),
            content_type: w.content_type.clone(),
            headers,
            acknowledged: w.acknowledged_status.iter().map(|s| *s as u16).collect(),
            concurrency: w.read_concurrency.clamp(1, 64) as usize,
            log,
        })
    }

    fn acknowledges(&self, status: u16) -> bool {
        if self.acknowledged.is_empty() {
            (200..300).contains(&status)
        } else {
            self.acknowledged.contains(&status)
        }
    }

    /// One write. Ok: acknowledged (and logged). Fail: refused or unanswered.
    pub(super) async fn probe(&self) -> (Outcome, Option<String>) {
        let at = super::now_ms();
        let (seq, id) = {
            let mut log = self.log.lock().unwrap();
            let seq = log.issue();
            (seq, log.id(seq))
        };
        let time = k8s_openapi::jiff::Timestamp::from_millisecond(at)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let body = fill(&self.body, &id, &time);
        let mut req = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, &self.content_type)
            .body(body);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Err(e) => (Outcome::Fail, Some(format!("write {}", http_error(&e)))),
            Ok(resp) if self.acknowledges(resp.status().as_u16()) => {
                self.log.lock().unwrap().ack(seq, at);
                (Outcome::Ok, None)
            }
            Ok(resp) => (
                Outcome::Fail,
                Some(format!("write answered HTTP {}", resp.status().as_u16())),
            ),
        }
    }

    /// Read every acknowledged write of `log` back, in order, at most
    /// `concurrency` at once; what is not read within `deadline` is unverified.
    pub(super) async fn verify(&self, log: &WriteLog, deadline: Duration) -> Readback {
        let until = tokio::time::Instant::now() + deadline;
        let mut rb = Readback::default();
        let mut reads = futures::stream::iter(log.acked())
            .map(|seq| async move { (seq, self.read(&log.id(seq), until, deadline).await) })
            .buffered(self.concurrency);
        while let Some((seq, read)) = reads.next().await {
            rb.record(seq, read);
        }
        rb
    }

    /// Read one write back, trying a failed read again while time is left.
    async fn read(&self, id: &str, until: tokio::time::Instant, deadline: Duration) -> Read {
        let url = self.read_url.replace("{{id}}", id);
        let mut why = String::new();
        for attempt in 0..READ_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
            }
            match tokio::time::timeout_at(until, self.read_once(&url, id)).await {
                Err(_) => {
                    return Read::Failed(format!("the read-back deadline ({deadline:?}) passed"));
                }
                Ok(Ok(read)) => return read,
                Ok(Err(e)) => why = e,
            }
        }
        Read::Failed(why)
    }

    async fn read_once(&self, url: &str, id: &str) -> Result<Read, String> {
        let mut req = self.client.get(url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| format!("read {}", http_error(&e)))?;
        let status = resp.status().as_u16();
        match status {
            404 | 410 => Ok(Read::Missing),
            200..=299 => {
                let (body, _) = read_capped(&mut resp, READ_CAP)
                    .await
                    .map_err(|e| format!("read {}", http_error(&e)))?;
                if String::from_utf8_lossy(&body).contains(id) {
                    Ok(Read::Found)
                } else {
                    Ok(Read::Missing)
                }
            }
            _ => Err(format!("read answered HTTP {status}")),
        }
    }
}

/// A template with `{{id}}` and `{{time}}` filled in.
fn fill(template: &str, id: &str, time: &str) -> String {
    template.replace("{{id}}", id).replace("{{time}}", time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_the_id_and_the_time() {
        assert_eq!(
            fill(
                r#"{"id":"{{id}}","at":"{{time}}","again":"{{id}}"}"#,
                "fd-1-7",
                "T"
            ),
            r#"{"id":"fd-1-7","at":"T","again":"fd-1-7"}"#
        );
    }
}
