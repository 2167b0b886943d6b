//! The store on an S3-compatible bucket (CONTRACT.md §7.9): [`ObjectFs`], an [`Fs`]
//! over `object_store`.
//!
//! A bucket store's root is the text of its URL, `s3://<bucket>/<prefix>/store`, kept
//! as a `PathBuf` like a local root, so the store, compaction and the Delta export
//! build their paths the same way on both; [`ObjectFs`] turns a path under
//! `s3://<bucket>/` into the object key after it. What the calls mean on a bucket:
//!
//! - a file is written in memory and uploaded when it is made durable
//!   ([`FsFile::sync_all`]): one PUT with `If-None-Match: *` (`PutMode::Create`), so a
//!   name that is taken fails with `AlreadyExists` as `create_new` does on a disk; a
//!   file larger than [`PART_BYTES`] goes up as a multipart upload while it is written
//!   (the parts, then one completing request);
//! - [`Fs::put_if_absent`], the publication of commit records and Delta commits, is one
//!   conditional PUT: the put-if-absent that S3, MinIO and SeaweedFS honour;
//! - directories are only key prefixes: creating or fsyncing one does nothing, and a
//!   directory exists while some key is under it;
//! - a PUT that returned is durable (S3's promise), so there is no fsync to do.
//!
//! `object_store` is async and the store is not (its writer is a thread of its own), so
//! [`ObjectFs`] runs every request on a small runtime of its own and waits for it: the
//! caller may be a plain thread or a task of another runtime, as with `std::fs`.

use std::fmt;
use std::future::Future;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::fs::{DataReader, DirEntry, Fs, FsFile};

/// A file bigger than this goes up in parts of this size while it is written (S3's
/// smallest part is 5 MiB).
pub const PART_BYTES: usize = 16 << 20;

/// Whether a data directory is a bucket URL rather than a local path.
pub fn is_bucket_url(dir: &Path) -> bool {
    dir.to_str().is_some_and(|s| s.starts_with("s3://"))
}

/// Where a bucket store lives, for readers that reach the bucket themselves
/// (DataFusion): the URL of the bucket (`s3://<bucket>`), and a client of it.
#[derive(Clone)]
pub struct Bucket {
    pub url: String,
    pub store: Arc<dyn ObjectStore>,
    /// Settings given on top of the `AWS_*` variables, to make another client alike.
    options: Vec<(String, String)>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Bucket {
    /// A client of the bucket of `url` (`s3://<bucket>[/<prefix>]`), set up from the
    /// standard `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...).
    pub fn from_env(url: &str) -> io::Result<Self> {
        Self::with_options(url, &[])
    }

    /// As [`Bucket::from_env`], with `options` (`object_store`'s S3 keys, such as
    /// `aws_endpoint_url`) taking precedence over the variables.
    pub fn with_options(url: &str, options: &[(&str, &str)]) -> io::Result<Self> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let rest = url.strip_prefix("s3://").ok_or_else(|| invalid(format!("not an s3:// URL: {url}")))?;
        let bucket = rest.split('/').next().unwrap_or_default();
        if bucket.is_empty() {
            return Err(invalid(format!("no bucket in {url}")));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in options {
            let key = key.parse().map_err(|e| invalid(format!("{url}: {e}")))?;
            builder = builder.with_config(key, *value);
        }
        let store = builder.build().map_err(|e| invalid(format!("{url}: {e}")))?;
        Ok(Bucket {
            url: format!("s3://{bucket}"),
            store: Arc::new(store),
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        })
    }

    /// Another client of the same bucket, with the same settings.
    pub fn reconnect(&self) -> io::Result<Self> {
        let options: Vec<(&str, &str)> = self.options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::with_options(&self.url, &options)
    }
}

/// The [`Fs`] of a store in a bucket (see the module's notes).
#[derive(Debug)]
pub struct ObjectFs {
    client: Arc<Client>,
    /// `s3://<bucket>/`: what every path this serves starts with.
    root: String,
}

/// A bucket's client and the runtime its requests run on.
struct Client {
    bucket: Bucket,
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.bucket.fmt(f)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a task of another runtime may not do.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Client {
    /// Runs a request on this client's runtime and waits for its answer.
    fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.as_ref().expect("runtime until dropped").spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().expect("the object store's runtime answers every request")
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        self.bucket.store.clone()
    }

    /// Uploads a whole object, unless its name is taken (`AlreadyExists`).
    fn put(&self, key: Key, body: Bytes) -> io::Result<()> {
        let store = self.store();
        let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        self.run(async move { store.put_opts(&key, PutPayload::from(body), opts).await.map(drop) }).map_err(io_error)
    }
}

impl ObjectFs {
    /// An `Fs` for the bucket of `url`, with its own client (see [`Bucket::from_env`]).
    pub fn from_env(url: &str) -> io::Result<Self> {
        Self::new(Bucket::from_env(url)?)
    }

    pub fn new(bucket: Bucket) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ioc-object-store")
            .enable_all()
            .build()?;
        let root = format!("{}/", bucket.url);
        Ok(ObjectFs { client: Arc::new(Client { bucket, runtime: Some(runtime) }), root })
    }

    fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        self.client.run(work)
    }

    /// The key of `path`, or `None` for a path above the bucket (`s3:`, `s3://b`).
    fn key(&self, path: &Path) -> Option<Key> {
        let text = path.to_str()?;
        let rest = text.strip_prefix(&self.root)?;
        Some(Key::from_iter(rest.split('/').filter(|p| !p.is_empty())))
    }

    fn key_of(&self, path: &Path) -> io::Result<Key> {
        self.key(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not in {}", path.display(), self.client.bucket.url),
            )
        })
    }

    fn get(&self, path: &Path) -> io::Result<Bytes> {
        let key = self.key_of(path)?;
        let store = self.client.store();
        self.run(async move { store.get(&key).await?.bytes().await }).map_err(io_error)
    }
}

/// An `object_store` error as the `io::Error` a disk would give.
fn io_error(e: object_store::Error) -> io::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            io::ErrorKind::AlreadyExists
        }
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl Fs for ObjectFs {
    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let key = self.key_of(path)?;
        Ok(Box::new(ObjectFile {
            client: self.client.clone(),
            key,
            buf: Vec::new(),
            upload: None,
            size: 0,
            done: false,
        }))
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        let body = self.get(original)?;
        self.client.put(self.key_of(link)?, body)
    }

    fn put_if_absent(&self, _tmp: &Path, path: &Path, body: &[u8]) -> io::Result<()> {
        self.client.put(self.key_of(path)?, Bytes::copy_from_slice(body))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let key = self.key_of(path)?;
        let store = self.client.store();
        self.run(async move { store.delete(&key).await }).map_err(io_error)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.get(path).map(Vec::from)
    }

    fn open_data(&self, path: &Path) -> io::Result<DataReader> {
        self.get(path).map(DataReader::Bytes)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let key = self.key_of(path)?;
        let store = self.client.store();
        let listed = self.run(async move { store.list_with_delimiter(Some(&key)).await }).map_err(io_error)?;
        let name = |k: &Key| k.filename().unwrap_or_default().into();
        Ok(listed
            .common_prefixes
            .iter()
            .map(|k| DirEntry { name: name(k), is_dir: true })
            .chain(listed.objects.iter().map(|o| DirEntry { name: name(&o.location), is_dir: false }))
            .collect())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let key = self.key_of(path)?;
        let store = self.client.store();
        self.run(async move { store.head(&key).await.map(|m| m.size) }).map_err(io_error)
    }

    fn exists(&self, path: &Path) -> bool {
        let Some(key) = self.key(path) else {
            return true; // the bucket itself, or above it
        };
        let store = self.client.store();
        self.run(async move {
            if store.head(&key).await.is_ok() {
                return true;
            }
            // A directory: some key below it. The listing's first page says.
            matches!(store.list(Some(&key)).next().await, Some(Ok(_)))
        })
    }

    fn bucket(&self) -> Option<&Bucket> {
        Some(&self.client.bucket)
    }
}

/// A file being written to a bucket: held in memory, or in parts once it is large,
/// and uploaded by [`FsFile::sync_all`].
struct ObjectFile {
    client: Arc<Client>,
    key: Key,
    buf: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
    size: u64,
    done: bool,
}

impl ObjectFile {
    /// Uploads the buffer as the next part, starting the multipart upload if needed.
    fn put_part(&mut self) -> io::Result<()> {
        let mut upload = match self.upload.take() {
            Some(u) => u,
            None => {
                let (store, key) = (self.client.store(), self.key.clone());
                self.client.run(async move { store.put_multipart(&key).await }).map_err(io_error)?
            }
        };
        let part = upload.put_part(PutPayload::from(std::mem::take(&mut self.buf)));
        let sent = self.client.run(part).map_err(io_error);
        self.upload = Some(upload);
        sent
    }
}

impl Write for ObjectFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.done {
            return Err(io::Error::other("write after the file was uploaded"));
        }
        self.buf.extend_from_slice(data);
        self.size += data.len() as u64;
        if self.buf.len() >= PART_BYTES {
            self.put_part()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FsFile for ObjectFile {
    fn sync_all(&mut self) -> io::Result<()> {
        if self.done {
            return Ok(());
        }
        if self.upload.is_none() {
            self.client.put(self.key.clone(), Bytes::from(std::mem::take(&mut self.buf)))?;
        } else {
            if !self.buf.is_empty() {
                self.put_part()?;
            }
            let mut upload = self.upload.take().expect("started");
            self.client.run(async move { upload.complete().await.map(drop) }).map_err(io_error)?;
        }
        self.done = true;
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

impl Drop for ObjectFile {
    fn drop(&mut self) {
        // A file dropped before it was made durable was never written: abandon its parts.
        if let Some(mut upload) = self.upload.take() {
            let _ = self.client.run(async move { upload.abort().await });
        }
    }
}
