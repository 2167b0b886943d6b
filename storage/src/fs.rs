//! The file-system seam of the store.
//!
//! Every file the store and its maintenance create, write, fsync, link or remove, every
//! directory they create or fsync, and every read of the commit log goes through
//! [`Fs`]. [`StdFs`] is the real implementation, on `std::fs`; others wrap it, to record
//! the operations of real commits and replay power losses
//! (`storage/tests/crash_consistency.rs`) or to inject faults.
//!
//! On a local disk, Parquet data is read straight from the real files by DataFusion,
//! so an implementation for tests must leave the files it is given on the real disk, at
//! the paths it is given: wrap [`StdFs`], do not replace it. The other implementation is
//! [`crate::object::ObjectFs`], a store in an S3-compatible bucket, which DataFusion
//! reads through [`Fs::bucket`].

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use bytes::Bytes;

use crate::object::Bucket;

/// The file operations of the store. Paths are absolute or relative to the current
/// directory, as the store's root is.
pub trait Fs: Send + Sync {
    /// Creates a directory and its missing parents; nothing if it exists.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates a new file to write; fails with `AlreadyExists` if the name is taken.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Makes a directory's entries durable (fsync of the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Gives the file `original` a second name, `link`; fails with `AlreadyExists` if
    /// that name is taken (put-if-absent).
    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()>;
    /// Publishes `body` as the new file `path`, whole and durable, or fails with
    /// `AlreadyExists` if the name is taken: how commit records and Delta commits are
    /// published. The default writes `tmp` in full, fsyncs it, hard-links it to `path`
    /// and removes it; fsyncing `path`'s directory is the caller's.
    fn put_if_absent(&self, tmp: &Path, path: &Path, body: &[u8]) -> io::Result<()> {
        write_synced(self, tmp, body)?;
        let linked = self.hard_link(tmp, path);
        // Best effort: a leftover temporary file is never read, and is replaced by the
        // next attempt with the same name.
        if let Err(e) = self.remove_file(tmp) {
            tracing::debug!(path = %tmp.display(), error = %e, "could not remove a temporary file");
        }
        linked
    }
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// A whole file's contents.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// A data file to read Parquet from: the open file on a disk, the object's bytes
    /// from a bucket.
    fn open_data(&self, path: &Path) -> io::Result<DataReader> {
        File::open(path).map(DataReader::File)
    }
    /// A directory's entries, in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// A file's size in bytes.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// The bucket the files are in, for a store in object storage; `None` on a disk.
    fn bucket(&self) -> Option<&Bucket> {
        None
    }
}

/// What [`Fs::open_data`] gives to read a Parquet file from.
#[derive(Debug)]
pub enum DataReader {
    File(File),
    Bytes(Bytes),
}

/// A file being written, from [`Fs::create_new`].
pub trait FsFile: Write + Send {
    /// Makes the file's data and size durable (fsync).
    fn sync_all(&mut self) -> io::Result<()>;
    /// The file's size in bytes.
    fn size(&self) -> io::Result<u64>;
}

/// One entry of [`Fs::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: OsString,
    /// Whether the entry is a directory (following a symbolic link).
    pub is_dir: bool,
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl FsFile for File {
    fn sync_all(&mut self) -> io::Result<()> {
        File::sync_all(self)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl Fs for StdFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(OpenOptions::new().write(true).create_new(true).open(path)?))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        fs::hard_link(original, link)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        fs::read_dir(path)?
            .map(|entry| {
                let entry = entry?;
                Ok(DirEntry { is_dir: entry.path().is_dir(), name: entry.file_name() })
            })
            .collect()
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Writes a small file in full and fsyncs it, replacing one left by an earlier attempt
/// (see [`create_replacing`]); on failure, removes it (best effort).
pub(crate) fn write_synced<F: Fs + ?Sized>(fs: &F, path: &Path, body: &[u8]) -> io::Result<()> {
    let mut f = create_replacing(fs, path)?;
    let written = f.write_all(body).and_then(|()| f.sync_all());
    drop(f);
    if written.is_err() {
        let _ = fs.remove_file(path);
    }
    written
}

/// Creates `path` with [`Fs::create_new`], first removing a file of that name left by
/// an earlier attempt or process (temporary and probe files only: never data).
pub(crate) fn create_replacing<F: Fs + ?Sized>(fs: &F, path: &Path) -> io::Result<Box<dyn FsFile>> {
    match fs.create_new(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs.remove_file(path)?;
            fs.create_new(path)
        }
        other => other,
    }
}
