//! Why a unix socket could not be reached, in words.
//!
//! rsbinder reports a failed connect as a status code (`NameNotFound`, `Errno(-111)`,
//! `Errno(-13)`), which tells a person nothing they can act on. When a connect fails, this
//! looks at the path itself (stat, then one plain `connect(2)`) and says what is there: no
//! such socket, something that is not a socket, a socket nobody listens on, or one this user
//! may not open (with its owner and mode, which are the service's access control).
//!
//! The same for a kernel binder device that cannot be opened (`--binder-device PATH`):
//! rsbinder says only `NoInit`.
//!
//! Binder-crate-neutral (std and nix only), used by the rsbinder half's `connect_unix` and
//! kernel open; on Android, AOSP's binder crate opens the device itself and there are no
//! unix-socket connections, so it is not built there.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// What is wrong with `path`, or `None` when a plain connect to it works now (the failure was
/// past the connect, in the RPC binder session: the caller's own error says more).
pub fn diagnose(path: &Path) -> Option<String> {
    let p = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Some(format!(
                "no socket at {p} (is dmabuf-loader-service running with --socket {p}?)"
            ))
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Some(format!(
                "permission denied looking up {p}: this user (uid {}) may not search a directory \
                 on the way to it",
                uid()
            ))
        }
        Err(e) => return Some(format!("cannot look at {p}: {e}")),
    };
    let ft = meta.file_type();
    if !ft.is_socket() {
        return Some(format!("{p} is not a socket: it is {}", kind(&meta)));
    }
    match UnixStream::connect(path) {
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(format!(
            "nobody is listening on {p}: the socket file is there but no service accepts on it \
             (left over from a service that exited?)"
        )),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Some(format!(
            "permission denied connecting to {p}: the socket is owned by uid {} gid {} with mode \
             {:04o}, and this client runs as uid {} (the socket's mode is the service's access \
             control)",
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777,
            uid()
        )),
        Err(e) => Some(format!("cannot connect to {p}: {e}")),
    }
}

/// Why the kernel binder device `path` could not be opened as one, in words (`said` is
/// what the binder library said, kept for the one case the path alone does not explain).
pub fn diagnose_device(path: &Path, said: &str) -> String {
    let p = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return format!(
                "no binder device at {p} (without kernel binder, use a unix socket: --socket PATH)"
            )
        }
        Err(e) => return format!("cannot look at {p}: {e}"),
    };
    if !meta.file_type().is_char_device() {
        return format!("{p} is not a binder device: it is {}", kind(&meta));
    }
    let rw = nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK;
    if nix::unistd::access(path, rw) == Err(nix::errno::Errno::EACCES) {
        return format!(
            "permission denied opening {p}: the device is owned by uid {} gid {} with mode \
             {:04o}, and this process runs as uid {}",
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777,
            uid()
        );
    }
    format!(
        "{p} is a character device this process may open, but it did not answer as a binder \
         device (the binder library said: {said})"
    )
}

/// "a regular file", "a directory", ... for a path that is not what was expected.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "something else"
    }
}

/// The effective uid: the one the kernel checks the socket's mode against.
fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_unreachable_path_reads_as_words() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none.sock");
        let words = diagnose(&none).unwrap();
        assert!(words.starts_with("no socket at "), "{words}");
        assert!(words.contains("--socket"), "{words}");

        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let words = diagnose(&plain).unwrap();
        assert!(
            words.ends_with("is not a socket: it is a regular file"),
            "{words}"
        );
        let words = diagnose(dir.path()).unwrap();
        assert!(
            words.ends_with("is not a socket: it is a directory"),
            "{words}"
        );

        // A socket file whose listener is gone: connect(2) gets ECONNREFUSED.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let words = diagnose(&stale).unwrap();
        assert!(words.starts_with("nobody is listening on "), "{words}");

        // A live listener: nothing wrong with the path itself.
        let live = dir.path().join("live.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        assert_eq!(diagnose(&live), None);
    }

    #[test]
    fn a_binder_device_that_cannot_be_opened_reads_as_words() {
        let dir = tempfile::tempdir().unwrap();
        let words = diagnose_device(&dir.path().join("binder"), "NoInit");
        assert!(words.starts_with("no binder device at "), "{words}");
        assert!(words.contains("--socket"), "{words}");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let words = diagnose_device(&plain, "NoInit");
        assert!(
            words.ends_with("is not a binder device: it is a regular file"),
            "{words}"
        );
        // A character device anyone may open that is not binder.
        let words = diagnose_device(Path::new("/dev/null"), "NoInit");
        assert!(
            words.contains("did not answer as a binder device (the binder library said: NoInit)"),
            "{words}"
        );
    }
}
