//! The one way the config reads a file it names: the config itself, the files of
//! `services_dir`, the token, CA and certificate files, keys and header files.
//!
//! Every one of them is opened without blocking and checked to be a regular file (symlinks to
//! one included, as Kubernetes mounts ConfigMaps and Secrets) *on the open descriptor*, so a
//! FIFO, a device or a socket put in a file's place is refused at once instead of wedging the
//! load (and with it every later reload), and a file swapped between a check and the open
//! cannot slip through. Reading stops one byte past a cap per kind of file: a wrong path (a
//! log, a disk image) is an error, not gigabytes in memory.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// How large each kind of file may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The main config file and the files of `services_dir`: 100,000 services fit easily.
    Config,
    /// PEM files (CA bundles, certificate chains, keys). The system bundle is ~220 KiB.
    Pem,
    /// Target lists (file_sd files), as an http_sd answer is capped: some 3 million targets.
    Targets,
    /// Token and header files: one credential, sent in a request head that servers cap at
    /// 8–16 KiB anyway.
    Secret,
}

impl Limit {
    /// The cap, in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Limit::Config => 256 * 1024 * 1024,
            Limit::Targets => 64 * 1024 * 1024,
            Limit::Pem => 4 * 1024 * 1024,
            Limit::Secret => 16 * 1024,
        }
    }
}

/// Why a file could not be read. Says nothing about the content (it may be a secret) and not
/// the path either: callers name the file and the key that points at it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("is not a regular file (it is {0})")]
    NotRegular(&'static str),
    #[error("is larger than {0} bytes")]
    TooLarge(u64),
}

impl ReadError {
    /// What is wrong, without the "cannot read" the message starts with.
    pub fn reason(&self) -> String {
        match self {
            ReadError::Io(e) => e.to_string(),
            ReadError::NotRegular(what) => format!("not a regular file (it is {what})"),
            ReadError::TooLarge(cap) => format!("larger than {cap} bytes"),
        }
    }
}

/// The whole content of the regular file at `path`, at most `limit` bytes.
pub fn read(path: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, forever. It changes
    // nothing for a regular file, and anything else is refused below, before any read.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind(&meta.file_type())));
    }
    let cap = limit.bytes();
    if meta.len() > cap {
        return Err(ReadError::TooLarge(cap));
    }
    let mut content = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The length may change while reading (a file being written): the cap holds regardless.
    file.take(cap + 1).read_to_end(&mut content)?;
    if content.len() as u64 > cap {
        return Err(ReadError::TooLarge(cap));
    }
    Ok(content)
}

/// [`read`], as UTF-8 text.
pub fn read_text(path: &Path, limit: Limit) -> Result<String, ReadError> {
    String::from_utf8(read(path, limit)?).map_err(|_| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is not valid UTF-8",
        ))
    })
}

fn kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("healthsweep-read-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn a_regular_file_is_read_whole_and_a_symlink_to_one_too() {
        let dir = scratch("regular");
        let file = dir.join("f");
        std::fs::write(&file, b"hello").expect("write");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert_eq!(read(&file, Limit::Secret).expect("read"), b"hello");
        assert_eq!(read(&link, Limit::Secret).expect("read"), b"hello");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_blocking() {
        let dir = scratch("fifo");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        // No writer ever comes: a blocking open would hang this test.
        match read(&fifo, Limit::Secret) {
            Err(ReadError::NotRegular(what)) => assert_eq!(what, "a FIFO"),
            other => panic!("expected NotRegular, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn directories_devices_and_oversized_files_are_refused() {
        let dir = scratch("other");
        assert!(matches!(
            read(&dir, Limit::Secret),
            Err(ReadError::NotRegular("a directory"))
        ));
        assert!(matches!(
            read(Path::new("/dev/zero"), Limit::Secret),
            Err(ReadError::NotRegular("a device"))
        ));
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; Limit::Secret.bytes() as usize + 1]).expect("write");
        assert!(matches!(
            read(&big, Limit::Secret),
            Err(ReadError::TooLarge(_))
        ));
        assert!(matches!(
            read(&dir.join("missing"), Limit::Secret),
            Err(ReadError::Io(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
