//! An S3-compatible bucket as the store's shared tier (`cache = "s3://bucket/prefix"`), through
//! the `object_store` crate, behind a blocking interface (a small tokio runtime of its own).
//!
//! Conditional create is `PUT` with `If-None-Match: *`. Servers answer a lost race in three
//! ways: 412 (S3, moto), 304 (some S3-compatible servers) and 409 `ConditionalRequestConflict`
//! (real S3, while another conditional write of the key is in flight). `object_store` folds all
//! three into "already exists"; only the first two mean it, so every such answer is checked
//! with a `HEAD`: an object that is there is the winner's, a key that is still empty is
//! retried with backoff. 5xx answers and dropped connections are retried by `object_store`
//! (exponential backoff, bounded in time).

use std::time::Duration;

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

/// A bucket and a prefix in it.
#[derive(Debug)]
pub(crate) struct Remote {
    url: String,
    prefix: String,
    s3: AmazonS3,
    rt: tokio::runtime::Runtime,
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
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        for (k, v) in options {
            let key: AmazonS3ConfigKey = k
                .parse()
                .map_err(|e| err(format!("S3 option `{k}`: {e}")))?;
            b = b.with_config(key, v);
        }
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
        b = b.with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: 6,
            retry_timeout: Duration::from_secs(120),
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
        };
        // One cheap request, so that a wrong endpoint, bucket or credential is one clear error
        // now rather than a failure in the middle of a stage.
        r.head("leases/.probe").map_err(|e| match e {
            StoreError::Remote { url, message } => StoreError::Remote {
                url,
                message: format!(
                    "the bucket does not answer ({message}); check AWS_ENDPOINT_URL, AWS_REGION \
                     and the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
                ),
            },
            e => e,
        })?;
        Ok(r)
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
            message: format!("{op} {rel}: {e}"),
        }
    }

    /// The object's bytes, `None` if there is none.
    pub(crate) fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let p = self.path(rel);
        self.rt.block_on(async {
            match self.s3.get(&p).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| self.err("GET", rel, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err("GET", rel, e)),
            }
        })
    }

    /// Size and modification time (ms since the epoch), `None` if there is no such object.
    pub(crate) fn head(&self, rel: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let p = self.path(rel);
        match self.rt.block_on(self.s3.head(&p)) {
            Ok(m) => Ok(Some((
                m.size,
                m.last_modified.timestamp_millis().max(0) as u64,
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("HEAD", rel, e)),
        }
    }

    /// Writes the object (last writer wins; S3 writes are atomic).
    pub(crate) fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let p = self.path(rel);
        self.rt
            .block_on(self.s3.put(&p, PutPayload::from(bytes)))
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
            match self
                .rt
                .block_on(self.s3.put_opts(&p, payload.clone(), opts))
            {
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
        match self.rt.block_on(self.s3.delete(&p)) {
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
            .rt
            .block_on(self.s3.list(Some(&p)).try_collect())
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
