//! An S3-compatible bucket as the store's shared tier (`cache = "s3://bucket/prefix"`), through
//! the `object_store` crate, behind a blocking interface (a small tokio runtime of its own).
//!
//! Conditional create is `PUT` with `If-None-Match: *`. Servers answer a lost race in three
//! ways: 412 (S3, moto), 304 (some S3-compatible servers) and 409 `ConditionalRequestConflict`
//! (real S3, while another conditional write of the key is in flight). `object_store` folds all
//! three into "already exists"; only the first two mean it, so every such answer is checked
//! with a `HEAD`: an object that is there is the winner's, a key that is still empty is
//! retried with backoff.
//!
//! Every request goes through one retry policy ([`RetryPolicy`]): a request that gets no
//! answer within `request_timeout` is abandoned, and connection errors, timeouts, 5xx and 429
//! answers are retried with exponential backoff and jitter until the `budget` (default two
//! minutes, `[s3] retry_seconds`) is spent, so a server that is down or frozen for a while is
//! ridden through. Other answers (4xx: no such bucket, access denied) are final at once.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjPath;
use object_store::{BackoffConfig, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};

use crate::error::StoreError;

/// How many times a conditional create that met a conflict (and no object) is tried again.
const CREATE_ATTEMPTS: u32 = 8;

/// An object of the bucket, by its key relative to the cache prefix.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RemoteEntry {
    pub rel: String,
    pub size: u64,
    pub modified_ms: u64,
}

/// How requests to the bucket are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RetryPolicy {
    /// How long one operation keeps being retried (from its first attempt).
    pub budget: Duration,
    /// How long one request may take before it is abandoned (and retried).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            budget: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The `[s3]` settings that are the retry policy's, not `object_store`'s.
pub(crate) const RETRY_SECONDS: &str = "retry_seconds";
pub(crate) const REQUEST_TIMEOUT_SECONDS: &str = "request_timeout_seconds";

/// How long the first request of a command is retried: a wrong endpoint or a server that is
/// not there is one error at the start, not two minutes of waiting.
const PROBE_BUDGET: Duration = Duration::from_secs(5);

/// A request that got no answer in time (retried like a dropped connection).
#[derive(Debug)]
struct NoAnswer(Duration);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer within {:.0?}", self.0)
    }
}

impl std::error::Error for NoAnswer {}

/// Whether an error may go away by itself: a request that got no answer, a connection that
/// failed or broke, a 5xx, 429 or 408 answer. A 4xx answer (no such bucket, access denied,
/// a key that is not there) is final, and so is anything else.
fn transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    if !matches!(e, E::Generic { .. }) {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<NoAnswer>() {
            return true;
        }
        let text = s.to_string();
        if let Some(code) = status_code(&text) {
            return code >= 500 || code == 429 || code == 408;
        }
        // object_store's transport errors (connection refused or broken, a timeout) read
        // "HTTP error: ..." (its `HttpError`, which the chain skips over).
        if text.contains("HTTP error: ") {
            return true;
        }
        source = s.source();
    }
    false
}

/// An `object_store` error as one readable line: without the repeated `Generic S3 error:`
/// prefixes, and an S3 XML error body as its code and message (`NoSuchBucket: The specified
/// bucket does not exist`).
fn describe(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let mut t = text.as_str();
    while let Some(rest) = t.strip_prefix("Generic S3 error: ") {
        t = rest;
    }
    let tag = |name: &str| -> Option<&str> {
        let open = format!("<{name}>");
        let at = t.find(&open)? + open.len();
        Some(&t[at..at + t[at..].find("</")?])
    };
    match (t.find("<?xml"), tag("Code"), tag("Message")) {
        (Some(at), Some(code), Some(message)) => format!("{}{code}: {message}", &t[..at]),
        _ => t.to_string(),
    }
}

/// The HTTP status in an `object_store` message (`... non-2xx status code: 503 ...`).
fn status_code(message: &str) -> Option<u16> {
    let at = message.find("status code: ")? + "status code: ".len();
    message[at..].get(..3)?.parse().ok()
}

/// A bucket and a prefix in it.
#[derive(Debug)]
pub(crate) struct Remote {
    url: String,
    prefix: String,
    s3: AmazonS3,
    rt: tokio::runtime::Runtime,
    policy: RetryPolicy,
    /// Where the bucket is, for messages: the endpoint, or AWS's own.
    endpoint: String,
}

/// `s3://bucket/prefix` -> (bucket, prefix without slashes at either end).
pub(crate) fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("`{url}` is not an s3:// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
        return Err(format!(
            "`{url}`: `{bucket}` is not a bucket name (3 to 63 characters: a-z, 0-9, `-`, `.`)"
        ));
    }
    let prefix = prefix.trim_matches('/').to_string();
    if prefix.split('/').any(|p| p == "." || p == "..") {
        return Err(format!("`{url}`: the prefix may not contain `.` or `..`"));
    }
    Ok((bucket.to_string(), prefix))
}

impl Remote {
    /// Connects to `url` with the usual AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION` or
    /// `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, ...), with `options`
    /// (`object_store` S3 config keys such as `aws_endpoint`) applied over it, and checks that
    /// the bucket answers.
    pub(crate) fn connect(url: &str, options: &[(String, String)]) -> Result<Remote, StoreError> {
        let err = |message: String| StoreError::Remote {
            url: url.to_string(),
            message,
        };
        let (bucket, prefix) = parse_url(url).map_err(err)?;
        let mut policy = RetryPolicy::default();
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        for (k, v) in options {
            let seconds = || -> Result<Duration, StoreError> {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| err(format!("[s3] {k} = {v}: a number of seconds above 0")))
            };
            match k.as_str() {
                RETRY_SECONDS => policy.budget = seconds()?,
                REQUEST_TIMEOUT_SECONDS => policy.request_timeout = seconds()?,
                _ => {
                    let key: AmazonS3ConfigKey = k.parse().map_err(|e| {
                        err(format!(
                            "S3 option `{k}`: {e} (besides object_store's keys: {RETRY_SECONDS}, {REQUEST_TIMEOUT_SECONDS})"
                        ))
                    })?;
                    b = b.with_config(key, v);
                }
            }
        }
        // Set before the http:// allowance below, which lives in the same client options.
        b = b.with_client_options(
            object_store::ClientOptions::new()
                .with_timeout(policy.request_timeout)
                .with_connect_timeout(policy.request_timeout.min(Duration::from_secs(10))),
        );
        // An endpoint given as http:// (a test server, a local MinIO) is meant to be used.
        let endpoint = b
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .unwrap_or_default();
        if endpoint.starts_with("http://") {
            b = b.with_allow_http(true);
            if b.get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
                .is_none()
            {
                b = b.with_virtual_hosted_style_request(false);
            }
        }
        // Retrying is this module's (one budget for every kind of failure); object_store
        // makes each request once.
        b = b.with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 0,
            retry_timeout: policy.budget,
        });
        let s3 = b.build().map_err(|e| err(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-io")
            .enable_all()
            .build()
            .map_err(|e| err(format!("cannot start the I/O runtime: {e}")))?;
        let r = Remote {
            url: url.to_string(),
            prefix,
            s3,
            rt,
            policy,
            endpoint: if endpoint.is_empty() {
                "AWS's endpoint for the region".into()
            } else {
                endpoint
            },
        };
        r.probe(&bucket)?;
        Ok(r)
    }

    /// One cheap request that needs the bucket (a listing), so that a wrong endpoint, bucket
    /// or credential is one clear error now rather than an empty cache or a failure in the
    /// middle of a stage.
    fn probe(&self, bucket: &str) -> Result<(), StoreError> {
        let p = self.path("leases");
        let r = self.call(PROBE_BUDGET.min(self.policy.budget), || {
            self.s3.list_with_delimiter(Some(&p))
        });
        r.map(|_| ()).map_err(|e| StoreError::Remote {
            url: self.url.clone(),
            message: format!(
                "the bucket `{bucket}` at {} does not answer ({}); check the bucket's name, AWS_ENDPOINT_URL, AWS_REGION and the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
                self.endpoint,
                describe(&e)
            ),
        })
    }

    /// Runs the request `f` makes until it succeeds, fails for good, or the retry budget is
    /// spent: each attempt abandoned after `request_timeout`; transient failures retried
    /// after an exponential backoff with jitter (100 ms doubling to 10 s, each wait drawn
    /// between half and all of it).
    fn call<T, F, Fut>(&self, budget: Duration, f: F) -> Result<T, object_store::Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, object_store::Error>>,
    {
        let start = Instant::now();
        let mut wait = Duration::from_millis(100);
        // Jitter only: each process its own stream, so that machines retrying after one
        // outage do not come back at the same instant.
        let mut rng = crate::rng::SplitMix64::new(
            crate::clock::now_ms() ^ (u64::from(std::process::id()) << 32),
        );
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let timeout = self.policy.request_timeout;
            let r = self.rt.block_on(async {
                match tokio::time::timeout(timeout, f()).await {
                    Ok(r) => r,
                    Err(_) => Err(object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(NoAnswer(timeout)),
                    }),
                }
            });
            match r {
                Err(e) if transient(&e) => {
                    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    let pause = wait.mul_f64(0.5 + 0.5 * unit);
                    if start.elapsed() + pause >= budget {
                        let hint = if budget == self.policy.budget {
                            format!(
                                "; the retry budget, [s3] {RETRY_SECONDS}, is {:.0} s",
                                budget.as_secs_f64()
                            )
                        } else {
                            String::new()
                        };
                        return Err(object_store::Error::Generic {
                            store: "S3",
                            source: format!(
                                "{} (gave up after {attempts} attempts in {:.1} s{hint})",
                                describe(&e),
                                start.elapsed().as_secs_f64(),
                            )
                            .into(),
                        });
                    }
                    std::thread::sleep(pause);
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                r => return r,
            }
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, rel: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn err(&self, op: &str, rel: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Remote {
            url: self.url.clone(),
            message: format!("{op} {rel}: {}", describe(&e)),
        }
    }

    /// The object's bytes, `None` if there is none.
    pub(crate) fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let p = self.path(rel);
        // The body is read inside the attempt: a connection that breaks mid-body is retried.
        let r = self.call(self.policy.budget, || async {
            self.s3.get(&p).await?.bytes().await
        });
        match r {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("GET", rel, e)),
        }
    }

    /// Size and modification time (ms since the epoch), `None` if there is no such object.
    pub(crate) fn head(&self, rel: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let p = self.path(rel);
        match self.call(self.policy.budget, || self.s3.head(&p)) {
            Ok(m) => Ok(Some((
                m.size,
                m.last_modified.timestamp_millis().max(0) as u64,
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("HEAD", rel, e)),
        }
    }

    /// [`crate::digest::header_digest`] of a safetensors object, from two ranged reads (its
    /// length prefix, then its header); `None` if the object is not there or too short.
    pub(crate) fn header_digest(&self, rel: &str) -> Result<Option<String>, StoreError> {
        let p = self.path(rel);
        let range = |r: std::ops::Range<u64>| match self
            .call(self.policy.budget, || self.s3.get_range(&p, r.clone()))
        {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("GET (range)", rel, e)),
        };
        let Some(len) = range(0..8)? else {
            return Ok(None);
        };
        let Ok(len8) = <[u8; 8]>::try_from(&len[..]) else {
            return Ok(None);
        };
        let n = u64::from_le_bytes(len8);
        let Some(head) = range(8..8u64.saturating_add(n))? else {
            return Ok(None);
        };
        let mut all = len.to_vec();
        all.extend_from_slice(&head);
        Ok(crate::digest::header_digest(&all))
    }

    /// Writes the object (last writer wins; S3 writes are atomic).
    pub(crate) fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let p = self.path(rel);
        let payload = PutPayload::from(bytes);
        self.call(self.policy.budget, || self.s3.put(&p, payload.clone()))
            .map(|_| ())
            .map_err(|e| self.err("PUT", rel, e))
    }

    /// Creates the object if the key is empty: `true` if this call created it, `false` if an
    /// object was there (or another writer's create won).
    pub(crate) fn create(&self, rel: &str, bytes: Vec<u8>) -> Result<bool, StoreError> {
        let p = self.path(rel);
        let payload = PutPayload::from(bytes);
        let mut wait = Duration::from_millis(50);
        for attempt in 1..=CREATE_ATTEMPTS {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            // A create that timed out may have been stored: retried, it meets its own object
            // ("exists"), which the HEAD below finds.
            match self.call(self.policy.budget, || {
                self.s3.put_opts(&p, payload.clone(), opts.clone())
            }) {
                Ok(_) => return Ok(true),
                Err(
                    e @ (object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::NotModified { .. }),
                ) => {
                    // 412 and 304 say "exists"; a 409 says "another write is in flight".
                    if self.head(rel)?.is_some() {
                        return Ok(false);
                    }
                    if attempt == CREATE_ATTEMPTS {
                        return Err(self.err(
                            "conditional PUT",
                            rel,
                            format!("still conflicting after {attempt} attempts: {e}"),
                        ));
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(self.err("conditional PUT", rel, e)),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Deletes the object; one that is not there is no error.
    pub(crate) fn delete(&self, rel: &str) -> Result<(), StoreError> {
        let p = self.path(rel);
        match self.call(self.policy.budget, || self.s3.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("DELETE", rel, e)),
        }
    }

    /// [`Remote::delete`] retried only for a few seconds.
    pub(crate) fn delete_soon(&self, rel: &str) -> Result<(), StoreError> {
        let p = self.path(rel);
        match self.call(PROBE_BUDGET.min(self.policy.budget), || self.s3.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("DELETE", rel, e)),
        }
    }

    /// Every object under `dir` (a key prefix ending at a `/` boundary), recursively.
    pub(crate) fn list(&self, dir: &str) -> Result<Vec<RemoteEntry>, StoreError> {
        let p = self.path(dir.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<object_store::ObjectMeta> = self
            .call(self.policy.budget, || self.s3.list(Some(&p)).try_collect())
            .map_err(|e| self.err("LIST", dir, e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.to_string();
                key.strip_prefix(&strip).map(|rel| RemoteEntry {
                    rel: rel.to_string(),
                    size: m.size,
                    modified_ms: m.last_modified.timestamp_millis().max(0) as u64,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://my-bucket/a/b/").unwrap(),
            ("my-bucket".into(), "a/b".into())
        );
        assert_eq!(parse_url("s3://bkt").unwrap(), ("bkt".into(), "".into()));
        assert!(parse_url("gs://bkt/x")
            .unwrap_err()
            .contains("not an s3:// URL"));
        assert!(parse_url("s3://B_ad/x")
            .unwrap_err()
            .contains("bucket name"));
        assert!(parse_url("s3://bkt/../x").unwrap_err().contains("`..`"));
    }
}
