//! Fuzzes request validation and the whole load of the core engine with hostile inputs:
//! every kind of fd a client can send (regular file of any size, pipe, socket, directory,
//! character device, O_PATH, write-only), any offset/length/heap name/flags, every I/O path.
//!
//! Properties checked on every input:
//! - a success returns exactly the requested bytes of the file, zero padding, the right sizes;
//! - a failure has the ErrorKind the input implies (e.g. a pipe is UnsupportedFileType);
//! - nothing leaks: the process's fd count is unchanged after each input.
#![no_main]

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use dmabuf_loader::{ChecksumType, Config, ErrorKind, IoPath, LoadControl, LoadRequest, Loader};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum SourceKind {
    File { len: u16, seed: u8 },
    Pipe,
    Socket,
    Directory,
    DevNull,
    PathOnly,
    WriteOnly,
}

#[derive(Arbitrary, Debug)]
enum Path_ {
    Auto,
    Buffered,
    BufferedSync,
    Direct,
}

#[derive(Arbitrary, Debug)]
struct Input {
    source: SourceKind,
    heap: Option<String>,
    offset: u64,
    length: Option<u64>,
    /// Keep most offsets small so that real loads happen, not only range errors.
    small_range: bool,
    read_only: bool,
    checksum: bool,
    path: Path_,
}

const MAX_LOAD: u64 = 48 * 1024;

struct Fixture {
    dir: PathBuf,
    loaders: Vec<(Path_, Loader)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // A disk directory so that O_DIRECT really runs (tmpfs would refuse it).
        let dir = std::env::var_os("DMABUF_FUZZ_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::current_dir().unwrap().join("target/fuzz-scratch"));
        std::fs::create_dir_all(&dir).unwrap();
        let make = |p: Option<IoPath>| {
            Loader::new(Config {
                max_load_bytes: MAX_LOAD,
                force_io_path: p,
                ..Config::default()
            })
            .unwrap()
        };
        Fixture {
            dir,
            loaders: vec![
                (Path_::Auto, make(None)),
                (Path_::Buffered, make(Some(IoPath::Buffered))),
                (Path_::BufferedSync, make(Some(IoPath::BufferedSync))),
                (Path_::Direct, make(Some(IoPath::Direct))),
            ],
        }
    })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3] ^ seed)
        .collect()
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Opens the fd the input asks for; returns it with the file's contents where it has some.
fn open_source(f: &Fixture, kind: &SourceKind) -> (OwnedFd, Option<Vec<u8>>, Option<ErrorKind>) {
    let file_path = f.dir.join(format!("src-{}", std::process::id()));
    match *kind {
        SourceKind::File { len, seed } => {
            let data = pattern(len as usize, seed);
            let mut w = File::create(&file_path).unwrap();
            w.write_all(&data).unwrap();
            drop(w);
            (File::open(&file_path).unwrap().into(), Some(data), None)
        }
        SourceKind::Pipe => {
            let (r, _w) = nix::unistd::pipe().unwrap();
            (r, None, Some(ErrorKind::UnsupportedFileType))
        }
        SourceKind::Socket => {
            let (a, _b) = nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .unwrap();
            (a, None, Some(ErrorKind::UnsupportedFileType))
        }
        SourceKind::Directory => (
            File::open(&f.dir).unwrap().into(),
            None,
            Some(ErrorKind::UnsupportedFileType),
        ),
        SourceKind::DevNull => (
            File::open("/dev/null").unwrap().into(),
            None,
            Some(ErrorKind::UnsupportedFileType),
        ),
        SourceKind::PathOnly => {
            File::create(&file_path).unwrap();
            let fd = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(&file_path)
                .unwrap();
            (fd.into(), None, Some(ErrorKind::PathOnlyFd))
        }
        SourceKind::WriteOnly => {
            let fd = File::create(&file_path).unwrap();
            (fd.into(), None, Some(ErrorKind::NotReadable))
        }
    }
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let before = fd_count();
    {
        let (fd, data, fd_error) = open_source(f, &input.source);
        let (offset, length) = if input.small_range {
            (input.offset % 70_000, input.length.map(|l| l % 70_000))
        } else {
            (input.offset, input.length)
        };
        let req = LoadRequest {
            heap: input.heap.clone(),
            offset,
            length,
            read_only: input.read_only,
            checksum: if input.checksum {
                ChecksumType::Xxh3_64
            } else {
                ChecksumType::None
            },
            name: None,
        };
        let loader = &f
            .loaders
            .iter()
            .find(|(p, _)| std::mem::discriminant(p) == std::mem::discriminant(&input.path))
            .unwrap()
            .1;
        let result = loader.load(fd.as_fd(), &req, &LoadControl::default());
        match (&result, &data) {
            (Ok(loaded), Some(data)) => {
                let start = offset as usize;
                let end = match length {
                    Some(l) => start + l as usize,
                    None => data.len(),
                };
                assert!(
                    end <= data.len() && start <= end,
                    "accepted a range outside the file: {req:?}"
                );
                let want = &data[start..end];
                assert_eq!(loaded.data_len, want.len() as u64);
                assert!(loaded.buffer_size >= loaded.data_len);
                assert!(
                    loaded.data_len <= MAX_LOAD,
                    "load over the size limit was accepted"
                );
                let got = read_all(&loaded.fd, loaded.buffer_size as usize);
                assert!(
                    got[..want.len()] == *want,
                    "contents differ for {req:?} via {:?}",
                    loaded.io_path
                );
                assert!(
                    got[want.len()..].iter().all(|&b| b == 0),
                    "padding not zero"
                );
            }
            (Ok(loaded), None) => {
                panic!("a non-file source loaded: {:?} -> {loaded:?}", input.source)
            }
            (Err(e), _) => {
                let heap_ok = match input.heap.as_deref() {
                    None | Some("") | Some("auto") => true,
                    Some(n) => loader.heaps().iter().any(|h| h.name == n),
                };
                if !heap_ok {
                    // The heap is resolved before the fd is looked at: cheapest check first.
                    assert_eq!(e.kind, ErrorKind::UnknownHeap, "{e:#}");
                } else if let Some(k) = fd_error {
                    assert_eq!(e.kind, k, "{:?}: {e:#}", input.source);
                } else {
                    assert!(
                        matches!(
                            e.kind,
                            ErrorKind::InvalidRange
                                | ErrorKind::TooLarge
                                | ErrorKind::UnknownHeap
                                | ErrorKind::InvalidArgument
                        ),
                        "unexpected error for a regular file: {e:#}"
                    );
                }
                assert!(!format!("{e}").is_empty());
            }
        }
    }
    assert_eq!(fd_count(), before, "fd leaked for {input:?}");
});

fn read_all(fd: &OwnedFd, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = nix::sys::uio::pread(fd, &mut out[done..], done as i64).unwrap();
        if n == 0 {
            break;
        }
        done += n;
    }
    out.truncate(done);
    out
}
