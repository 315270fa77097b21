//! The v2 cases: `loadInto` / `loadIntoAsync`, filling a buffer the client owns. Each runs only
//! against instances that report interface version >= 2; on a v1 instance the runner reports
//! them ignored ("skipped: v1 instance"), neither passed nor failed.
//!
//! Targets are real buffers of the instance's own heaps: the suite gets one from heap H by
//! loading a pattern file of the target's size with `load(heapName = H)` (so "every heap as a
//! target" needs no allocator in the suite), snapshots it, lets the service fill a range of it,
//! and checks the range against the file and every other byte against the snapshot.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::fcntl::OFlag;

use crate::binder::{
    self, clone_result, error_code_name, pfd, BufferKind, CallError, ErrorCode, ILoadCallback,
    LoadRequest, LoadResult, ParcelFileDescriptor,
};
use crate::cases::{call, expect_code, heaps, loader, open_ro, remote_version, CaseFn, Loader};
use crate::os::{self, page_size};
use crate::{Env, Instance};

const MIB: u64 = 1 << 20;

/// All v2 cases, by name.
pub fn all() -> Vec<(String, CaseFn)> {
    let mut v: Vec<(String, CaseFn)> = Vec::new();
    let mut add = |name: &str, f: CaseFn| v.push((format!("load_into.{name}"), f));
    add("every_heap_as_target", Arc::new(every_heap));
    add("edges", Arc::new(edges));
    add("reuse_one_target", Arc::new(reuse));
    add("bad_target.too_small", Arc::new(bad_too_small));
    add("bad_target.negative_offset", Arc::new(bad_negative_offset));
    add("bad_target.regular_file", Arc::new(bad_regular_file));
    add("bad_target.pipe", Arc::new(|i, _| bad_pipe(i)));
    add("bad_target.read_only", Arc::new(bad_read_only));
    add("bad_target.source_itself", Arc::new(bad_source_itself));
    add("bad_target.heap_name_given", Arc::new(bad_heap_name));
    add("async.complete", Arc::new(async_complete));
    add(
        "async.cancel_leaves_outside_untouched",
        Arc::new(async_cancel),
    );
    v
}

/// The instance's connection. A v1 instance has no loadInto: the runner marks these cases
/// ignored for it before the run ([`crate::cases::min_version`]); one that still reaches here
/// (`--include-ignored`) fails, saying why, rather than pass without testing anything.
fn v2_loader(inst: &Instance) -> Result<(Arc<binder::Connection>, Loader)> {
    let (c, l) = loader(inst)?;
    let v = remote_version(&l)?;
    ensure!(
        v >= 2,
        "skipped: v1 instance (getInterfaceVersion = {v}): it has no loadInto"
    );
    Ok((c, l))
}

/// A buffer of at least `size` bytes from `heap`, with known contents (a pattern file of
/// seed 77 loaded into it), and a snapshot of all its bytes.
struct Target {
    fd: ParcelFileDescriptor,
    size: u64,
    before: Vec<u8>,
    heap: String,
}

fn read_all(fd: &ParcelFileDescriptor, size: u64) -> Result<Vec<u8>> {
    let b = binder::fd(fd);
    let dma = os::dma_buf_exporter(b)?.is_some();
    let map = os::Mapping::read_only(b, size)?;
    if dma {
        os::dma_buf_begin_cpu_read(b)?;
    }
    let v = map.bytes().to_vec();
    if dma {
        os::dma_buf_end_cpu_read(b)?;
    }
    Ok(v)
}

fn target(l: &Loader, env: &Env, heap: &str, size: u64) -> Result<Target> {
    let file = env.pattern_file(size, 77)?;
    let req = LoadRequest {
        heapName: heap.to_string(),
        ..Default::default()
    };
    let r = call(l.load(&open_ro(&file)?, &req), "load (making a target)")?;
    let fd = r.buffer.context("LoadResult.buffer is null")?;
    let size = os::fd_size(binder::fd(&fd))?;
    let before = read_all(&fd, size)?;
    Ok(Target {
        fd,
        size,
        before,
        heap: heap.to_string(),
    })
}

/// Checks a successful loadInto: bookkeeping, the range holds `file[offset..offset+len]`,
/// every other byte of the target is what it was.
fn check_filled(
    r: &LoadResult,
    t: &Target,
    file: &Path,
    offset: u64,
    len: u64,
    toff: u64,
) -> Result<()> {
    ensure!(
        r.dataLength == len as i64,
        "dataLength {} != {len}",
        r.dataLength
    );
    ensure!(
        r.dataOffset == toff as i64,
        "dataOffset {} != {toff}",
        r.dataOffset
    );
    ensure!(
        r.bufferSize == t.size as i64,
        "bufferSize {} != target size {}",
        r.bufferSize,
        t.size
    );
    ensure!(
        r.allocNanos == 0,
        "allocNanos {} for a load into the caller's buffer",
        r.allocNanos
    );
    ensure!(r.pageSize >= 0, "pageSize {}", r.pageSize);
    let back = r
        .buffer
        .as_ref()
        .context("LoadResult.buffer (the target) is null")?;
    let st_a = nix::sys::stat::fstat(binder::fd(back).as_raw_fd())?;
    let st_b = nix::sys::stat::fstat(binder::fd(&t.fd).as_raw_fd())?;
    ensure!(
        (st_a.st_dev, st_a.st_ino) == (st_b.st_dev, st_b.st_ino),
        "LoadResult.buffer is not the target"
    );
    let exporter = os::dma_buf_exporter(binder::fd(&t.fd))?;
    match &exporter {
        Some(e) => ensure!(
            r.heapName == *e,
            "heapName {:?} != the target's exp_name {e:?}",
            r.heapName
        ),
        None => ensure!(
            r.bufferKind == BufferKind::MEMFD,
            "a non-dma-buf target reported as {:?}",
            r.bufferKind
        ),
    }
    let after = read_all(&t.fd, t.size)?;
    let want = os::read_range(file, offset, len)?;
    let (a, b) = (toff as usize, (toff + len) as usize);
    ensure!(
        after[a..b] == want[..],
        "the target's range {a}..{b} does not hold the file's bytes"
    );
    if let Some(i) = (0..a)
        .chain(b..after.len())
        .find(|&i| after[i] != t.before[i])
    {
        bail!("byte {i} of the target, outside the range {a}..{b}, changed");
    }
    Ok(())
}

fn load_into(
    l: &Loader,
    file: &Path,
    offset: u64,
    len: u64,
    t: &Target,
    toff: u64,
) -> Result<LoadResult> {
    let req = LoadRequest {
        offset: offset as i64,
        length: len as i64,
        ..Default::default()
    };
    call(
        l.loadInto(&open_ro(file)?, &req, &t.fd, toff as i64),
        &format!("loadInto({offset}+{len} -> {} target at {toff})", t.heap),
    )
}

fn every_heap(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    let file = env.pattern_file(3 * MIB + 5, 5)?;
    let all = heaps(&l)?;
    // Where the machine has dma-bufs, a target must be one (the contract of loadInto): a
    // non-dma-buf heap the service also lists (memfd) makes a target it must refuse.
    let has_dmabuf = all.iter().any(|h| h.isDmaBuf);
    for h in all {
        let t = target(&l, env, &h.name, 4 * MIB)?;
        let (off, len, toff) = (4096 + 3, 2 * MIB + 1, page_size() + 7);
        if has_dmabuf && !h.isDmaBuf {
            let req = LoadRequest {
                offset: off as i64,
                length: len as i64,
                ..Default::default()
            };
            expect_code(
                l.loadInto(&open_ro(&file)?, &req, &t.fd, toff as i64),
                ErrorCode::NOT_A_DMABUF,
                &format!("a {} target on a machine with dma-bufs", h.name),
            )?;
            continue;
        }
        let r = load_into(&l, &file, off, len, &t, toff)?;
        check_filled(&r, &t, &file, off, len, toff).with_context(|| format!("heap {}", h.name))?;
        eprintln!(
            "note: heap {} as target: ioPath {:?} ({})",
            h.name, r.ioPath, r.ioPathReason
        );
    }
    Ok(())
}

fn edges(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    let size = 2 * MIB;
    let file = env.pattern_file(3 * MIB, 6)?;
    let def = heaps(&l)?[0].name.clone();
    let t = target(&l, env, &def, size)?;
    let s = t.size;
    // (file offset, length, target offset): the whole target, ending exactly at its end,
    // one byte at its last byte, one byte at its first, empty at its very end.
    for (off, len, toff) in [
        (0, s, 0),
        (MIB + 1, s - 4099, 4099),
        (7, 1, s - 1),
        (0, 1, 0),
        (0, 0, s),
    ] {
        let t = target(&l, env, &def, size)?;
        let r = load_into(&l, &file, off, len, &t, toff)?;
        check_filled(&r, &t, &file, off, len, toff)
            .with_context(|| format!("offset {off} length {len} at {toff}"))?;
    }
    Ok(())
}

fn reuse(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    let def = heaps(&l)?[0].name.clone();
    let mut t = target(&l, env, &def, 2 * MIB)?;
    for seed in 10..14u64 {
        let file = env.pattern_file(MIB + seed, seed)?;
        let r = load_into(&l, &file, 0, MIB + seed, &t, 4096)?;
        check_filled(&r, &t, &file, 0, MIB + seed, 4096)?;
        t.before = read_all(&t.fd, t.size)?;
    }
    Ok(())
}

fn small_file(env: &Env) -> Result<std::path::PathBuf> {
    env.pattern_file(64 * 1024, 8)
}

fn bad_too_small(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    let def = heaps(&l)?[0].name.clone();
    let t = target(&l, env, &def, 64 * 1024)?;
    let file = env.pattern_file(t.size + 1, 9)?;
    let fd = open_ro(&file)?;
    expect_code(
        l.loadInto(&fd, &LoadRequest::default(), &t.fd, 0),
        ErrorCode::TARGET_TOO_SMALL,
        "a file one byte larger than the target",
    )?;
    expect_code(
        l.loadInto(
            &open_ro(&small_file(env)?)?,
            &LoadRequest::default(),
            &t.fd,
            t.size as i64 - 100,
        ),
        ErrorCode::TARGET_TOO_SMALL,
        "a range running past the target's end",
    )?;
    expect_code(
        l.loadInto(&fd, &LoadRequest::default(), &t.fd, i64::MAX),
        ErrorCode::TARGET_TOO_SMALL,
        "targetOffset i64::MAX",
    )?;
    ensure!(
        read_all(&t.fd, t.size)? == t.before,
        "a refused target was written"
    );
    Ok(())
}

fn bad_negative_offset(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    let def = heaps(&l)?[0].name.clone();
    let t = target(&l, env, &def, 64 * 1024)?;
    expect_code(
        l.loadInto(
            &open_ro(&small_file(env)?)?,
            &LoadRequest::default(),
            &t.fd,
            -1,
        ),
        ErrorCode::INVALID_RANGE,
        "targetOffset -1",
    )
}

fn bad_regular_file(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    let p = env.path("not-a-dmabuf");
    std::fs::write(&p, vec![0u8; 1 << 20])?;
    let rw = os::open_with(&p, OFlag::O_RDWR)?;
    expect_code(
        l.loadInto(
            &open_ro(&small_file(env)?)?,
            &LoadRequest::default(),
            &pfd(rw),
            0,
        ),
        ErrorCode::NOT_A_DMABUF,
        "a regular file as target",
    )
}

fn bad_pipe(inst: &Instance) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    let (r, w) = nix::unistd::pipe()?;
    let src = tempfile::tempfile()?;
    src.set_len(4096)?;
    let rw = os::reopen(r.as_fd(), OFlag::O_RDWR)?;
    drop((r, w));
    expect_code(
        l.loadInto(&pfd(src), &LoadRequest::default(), &pfd(rw), 0),
        ErrorCode::NOT_A_DMABUF,
        "a pipe (opened O_RDWR) as target",
    )
}

fn bad_read_only(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    // A read-only buffer the service itself hands out (memfd heap, readOnly = true); on
    // machines whose heaps have no read-only buffers, the regular file below opened O_RDONLY.
    let hs = heaps(&l)?;
    let src = open_ro(&small_file(env)?)?;
    let ro = match hs.iter().find(|h| !h.isDmaBuf) {
        Some(h) => {
            let req = LoadRequest {
                heapName: h.name.clone(),
                readOnly: true,
                ..Default::default()
            };
            let r = call(l.load(&open_ro(&small_file(env)?)?, &req), "load(readOnly)")?;
            r.buffer.context("null buffer")?
        }
        None => pfd(File::open(small_file(env)?)?),
    };
    match l.loadInto(&src, &LoadRequest::default(), &ro, 0) {
        Ok(_) => bail!("loadInto a read-only target succeeded"),
        Err(s) => match CallError::from_status(&s) {
            CallError::Service { code: c, .. }
                if c == ErrorCode::TARGET_NOT_WRITABLE.0 || c == ErrorCode::NOT_A_DMABUF.0 =>
            {
                Ok(())
            }
            other => bail!("loadInto a read-only target: {other:?}, expected TARGET_NOT_WRITABLE"),
        },
    }
}

fn bad_source_itself(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    let p = env.path("source-itself");
    std::fs::write(&p, vec![1u8; 8192])?;
    let fd = pfd(os::open_with(&p, OFlag::O_RDWR)?);
    match l.loadInto(&fd, &LoadRequest::default(), &fd, 0) {
        Ok(_) => bail!("loadInto the source itself succeeded"),
        Err(s) => match CallError::from_status(&s) {
            // The same inode (INVALID_ARGUMENT) or, checked first by a service, not a dma-buf.
            CallError::Service { code: c, .. }
                if c == ErrorCode::INVALID_ARGUMENT.0 || c == ErrorCode::NOT_A_DMABUF.0 =>
            {
                Ok(())
            }
            CallError::Service {
                code: c,
                message: m,
            } => {
                bail!(
                    "loadInto the source itself: {} ({c}) {m}",
                    error_code_name(c)
                )
            }
            other => bail!("loadInto the source itself: {other:?}"),
        },
    }
}

fn bad_heap_name(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    let hs = heaps(&l)?;
    let t = target(&l, env, &hs[0].name, 64 * 1024)?;
    let req = LoadRequest {
        heapName: hs[0].name.clone(),
        ..Default::default()
    };
    expect_code(
        l.loadInto(&open_ro(&small_file(env)?)?, &req, &t.fd, 0),
        ErrorCode::INVALID_ARGUMENT,
        "heapName given to loadInto",
    )
}

/// Records what an async load-into told its callback.
#[derive(Debug)]
enum Ev {
    Progress(i64, i64),
    Complete(Result<LoadResult, String>),
    Error(i32, String),
}

struct Recorder(Mutex<std::sync::mpsc::Sender<Ev>>);

impl binder::Interface for Recorder {}

impl ILoadCallback for Recorder {
    fn onProgress(&self, done: i64, total: i64) -> binder::BinderResult<()> {
        let _ = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Ev::Progress(done, total));
        Ok(())
    }
    fn onComplete(&self, r: &LoadResult) -> binder::BinderResult<()> {
        let r = clone_result(r).map_err(|e| format!("{e:#}"));
        let _ = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Ev::Complete(r));
        Ok(())
    }
    fn onError(&self, code: i32, msg: &str) -> binder::BinderResult<()> {
        let _ = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Ev::Error(code, msg.to_string()));
        Ok(())
    }
}

/// Runs loadIntoAsync to its end; `cancel` cancels right after it returns.
fn run_async(
    l: &Loader,
    file: &Path,
    t: &Target,
    toff: u64,
    cancel: bool,
) -> Result<(Vec<(i64, i64)>, Ev)> {
    let (tx, rx) = channel();
    let cb = binder::new_callback(Recorder(Mutex::new(tx)));
    let task = call(
        l.loadIntoAsync(
            &open_ro(file)?,
            &LoadRequest::default(),
            &t.fd,
            toff as i64,
            &cb,
        ),
        "loadIntoAsync",
    )?;
    if cancel {
        call(task.cancel(), "cancel")?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut progress = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ev::Progress(d, n)) => progress.push((d, n)),
            Ok(end) => {
                ensure!(
                    rx.recv_timeout(Duration::from_millis(200)).is_err(),
                    "an event after the terminal one"
                );
                return Ok((progress, end));
            }
            Err(RecvTimeoutError::Timeout) => bail!("no onComplete/onError within 120 s"),
            Err(RecvTimeoutError::Disconnected) => bail!("callback released without an end"),
        }
    }
}

fn async_complete(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    let def = heaps(&l)?[0].name.clone();
    let size = 8 * MIB;
    let file = env.pattern_file(size - 3 * 4096, 12)?;
    let t = target(&l, env, &def, size)?;
    let (progress, end) = run_async(&l, &file, &t, 4096, false)?;
    let len = size - 3 * 4096;
    match end {
        Ev::Complete(Ok(r)) => check_filled(&r, &t, &file, 0, len, 4096)?,
        other => bail!("loadIntoAsync ended with {other:?}"),
    }
    ensure!(
        progress
            .last()
            .is_some_and(|&(d, n)| d == n && n == len as i64),
        "progress did not end at {len}: {:?}",
        progress.last()
    );
    Ok(())
}

fn async_cancel(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = v2_loader(inst)?;
    let def = heaps(&l)?[0].name.clone();
    let size = 64 * MIB;
    let file = env.pattern_file(size - 8192, 1)?;
    let t = target(&l, env, &def, size)?;
    let (_progress, end) = run_async(&l, &file, &t, 4096, true)?;
    match end {
        Ev::Error(c, m) => ensure!(
            c == ErrorCode::CANCELLED.0,
            "cancelled loadIntoAsync: {} ({c}) {m}",
            error_code_name(c)
        ),
        Ev::Complete(Ok(r)) => {
            // The load beat the cancel: it must then be whole and correct.
            eprintln!("note: the load finished before the cancel landed");
            check_filled(&r, &t, &file, 0, size - 8192, 4096)?;
        }
        other => bail!("cancelled loadIntoAsync ended with {other:?}"),
    }
    // Whatever the range holds now, the bytes outside it are the target's own.
    let after = read_all(&t.fd, t.size)?;
    let end = 4096 + (size - 8192) as usize;
    ensure!(
        after[..4096] == t.before[..4096],
        "the head before the range changed"
    );
    ensure!(
        after[end..] == t.before[end..],
        "the tail after the range changed"
    );
    Ok(())
}
