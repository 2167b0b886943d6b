//! The file-system seam of the store.
//!
//! Every file the store and its maintenance create, write, fsync, link or remove, every
//! directory they create or fsync, and every read of the commit log goes through
//! [`Fs`]. [`StdFs`] is the real implementation, on `std::fs`; others wrap it, to record
//! the operations of real commits and replay power losses
//! (`storage/tests/crash_consistency.rs`) or to inject faults.
//!
//! Parquet data is read straight from the real files, by [`crate::Store::read_file`]
//! and by DataFusion, so an implementation must leave the files it is given on the
//! real disk, at the paths it is given: wrap [`StdFs`], do not replace it.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

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
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// A whole file's contents.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// A directory's entries, in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// A file's size in bytes.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
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

/// Creates `path` with [`Fs::create_new`], first removing a file of that name left by
/// an earlier attempt or process (temporary and probe files only: never data).
pub(crate) fn create_replacing(fs: &dyn Fs, path: &Path) -> io::Result<Box<dyn FsFile>> {
    match fs.create_new(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs.remove_file(path)?;
            fs.create_new(path)
        }
        other => other,
    }
}
