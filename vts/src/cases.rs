//! The test cases. Each takes one instance and asserts exact contents or the exact ErrorCode
//! documented in aidl/vendor/dmabufloader/ErrorCode.aidl.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::fcntl::OFlag;

use crate::binder::{
    self, clone_result, error_code_name, pfd, BinderResult, BufferKind, CallError, ChecksumType,
    ErrorCode, HeapInfo, IDmabufLoader, ILoadCallback, ILoadTask, IoPath, LoadRequest, LoadResult,
    ParcelFileDescriptor,
};
use crate::os::{self, page_size, round_up_to_page, verify_fd_contents};
use crate::{Env, Instance};

pub(crate) type Loader = binder::Strong<dyn IDmabufLoader>;
pub type CaseFn = Arc<dyn Fn(&Instance, &Env) -> Result<()> + Send + Sync>;

/// Longest wait for an async load to end.
const ASYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to watch for events after the terminal one.
const QUIET_PERIOD: Duration = Duration::from_millis(200);

const MIB: u64 = 1 << 20;

/// The three ways to load.
#[derive(Clone, Copy, Debug)]
pub enum Api {
    LoadFile,
    Load,
    LoadAsync,
}

impl Api {
    const ALL: [Api; 3] = [Api::LoadFile, Api::Load, Api::LoadAsync];
    fn name(self) -> &'static str {
        match self {
            Api::LoadFile => "loadFile",
            Api::Load => "load",
            Api::LoadAsync => "loadAsync",
        }
    }
}

/// All cases, by name, in run order.
pub fn all() -> Vec<(String, CaseFn)> {
    let mut v: Vec<(String, CaseFn)> = Vec::new();
    let mut add = |name: String, f: CaseFn| v.push((name, f));

    add(
        "interface.version".into(),
        Arc::new(|i, _| interface_version(i)),
    );
    add("interface.hash".into(), Arc::new(|i, _| interface_hash(i)));
    add(
        "interface.service_info".into(),
        Arc::new(|i, _| service_info(i)),
    );

    let p = page_size();
    let sizes: [(&str, u64); 6] = [
        ("0", 0),
        ("1", 1),
        ("page-1", p - 1),
        ("page+1", p + 1),
        ("1MiB+7", MIB + 7),
        ("64MiB", 64 * MIB),
    ];
    for api in Api::ALL {
        for (label, size) in sizes {
            add(
                format!("contents.{}.{label}", api.name()),
                Arc::new(move |i, e| contents(i, e, api, size)),
            );
        }
    }
    add("contents.checksum_xxh3".into(), Arc::new(checksum_xxh3));
    add(
        "contents.memfd_source".into(),
        Arc::new(|i, _| memfd_source(i)),
    );
    add(
        "contents.source_opened_o_direct".into(),
        Arc::new(source_opened_o_direct),
    );
    add(
        "contents.buffers_are_private".into(),
        Arc::new(buffers_are_private),
    );
    add(
        "contents.client_fd_untouched".into(),
        Arc::new(client_fd_untouched),
    );

    for (label, r) in ranges() {
        add(
            format!("range.{label}"),
            Arc::new(move |i, e| range_ok(i, e, r)),
        );
    }
    add(
        "range.to_eof_loadAsync".into(),
        Arc::new(range_to_eof_async),
    );
    for (label, offset, length) in bad_ranges() {
        add(
            format!("range.invalid.{label}"),
            Arc::new(move |i, e| range_invalid(i, e, offset, length)),
        );
    }

    add("heaps.list".into(), Arc::new(|i, _| heaps_list(i)));
    add(
        "heaps.io_path_matches_service_info".into(),
        Arc::new(io_path_matches_service_info),
    );
    add("heaps.each_loads_correctly".into(), Arc::new(heaps_each));
    add(
        "heaps.read_only_not_writable".into(),
        Arc::new(heaps_read_only),
    );

    add("bad_input.pipe".into(), Arc::new(|i, _| bad_pipe(i)));
    add("bad_input.socket".into(), Arc::new(|i, _| bad_socket(i)));
    add("bad_input.directory".into(), Arc::new(bad_directory));
    add("bad_input.o_path_fd".into(), Arc::new(bad_o_path));
    add("bad_input.write_only_fd".into(), Arc::new(bad_write_only));
    add(
        "bad_input.dev_null".into(),
        Arc::new(|i, _| bad_char_device(i, "/dev/null")),
    );
    add(
        "bad_input.dev_zero".into(),
        Arc::new(|i, _| bad_char_device(i, "/dev/zero")),
    );
    add(
        "bad_input.range_past_eof".into(),
        Arc::new(bad_range_past_eof),
    );
    add("bad_input.over_size_limit".into(), Arc::new(bad_over_limit));
    add("bad_input.unknown_heap".into(), Arc::new(bad_unknown_heap));
    add(
        "bad_input.unknown_checksum".into(),
        Arc::new(bad_unknown_checksum),
    );
    add("bad_input.null_fd".into(), Arc::new(|i, _| bad_null_fd(i)));

    add("async.progress_monotonic".into(), Arc::new(async_progress));
    add(
        "async.cancel_yields_no_buffer".into(),
        Arc::new(async_cancel),
    );
    add(
        "async.cancel_after_complete".into(),
        Arc::new(async_cancel_after_complete),
    );
    add(
        "async.error_via_callback".into(),
        Arc::new(async_error_via_callback),
    );
    add(
        "async.file_truncated_during_load".into(),
        Arc::new(async_truncated),
    );

    add("concurrency.8_threads".into(), Arc::new(concurrency));
    add(
        "endurance.1000_loads_no_fd_growth".into(),
        Arc::new(endurance),
    );
    #[cfg(not(aidl_v1))]
    v.extend(crate::load_into::all());
    v
}

/// The interface version a case needs: the v2 cases (`load_into.*`) call methods a v1
/// instance does not have, so the runner reports them ignored there, as VTS skips.
pub fn min_version(case: &str) -> i32 {
    if case.starts_with("load_into.") {
        2
    } else {
        1
    }
}

/// The instance's interface version (getInterfaceVersion), for [`min_version`].
pub fn instance_version(inst: &Instance) -> Result<i32> {
    let (_c, l) = loader(inst)?;
    remote_version(&l)
}

// ---------------------------------------------------------------------------------------------
// helpers

pub(crate) fn loader(inst: &Instance) -> Result<(Arc<binder::Connection>, Loader)> {
    let c = inst.connection()?;
    let l = c.service.clone();
    Ok((c, l))
}

pub(crate) fn open_ro(path: &Path) -> Result<ParcelFileDescriptor> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    Ok(pfd(f))
}

fn request(offset: i64, length: i64) -> LoadRequest {
    LoadRequest {
        offset,
        length,
        ..Default::default()
    }
}

/// The buffer size a `data`-byte load must report: `data` rounded up to a page. For an empty
/// load the AIDL text says 0, but no dma-buf exporter can make a 0-byte buffer (dma-heap and
/// udmabuf refuse size 0), so one page of zeros is accepted too.
fn buffer_size_ok(data: u64, size: u64) -> bool {
    size == round_up_to_page(data) || (data == 0 && size == page_size())
}

/// The call must fail with ServiceSpecificException(`want`).
pub(crate) fn expect_code<T: std::fmt::Debug>(
    res: BinderResult<T>,
    want: ErrorCode,
    what: &str,
) -> Result<()> {
    match res {
        Ok(v) => bail!("{what}: succeeded ({v:?}), expected {want:?}"),
        Err(s) => match CallError::from_status(&s) {
            CallError::Service { code: c, .. } if c == want.0 => Ok(()),
            CallError::Service {
                code: c,
                message: m,
            } => {
                bail!(
                    "{what}: failed with {} ({c}) \"{m}\", expected {want:?} ({})",
                    error_code_name(c),
                    want.0
                )
            }
            CallError::Binder(o) => {
                bail!("{what}: failed with {o}, expected ServiceSpecific {want:?}")
            }
        },
    }
}

/// A BUSY answer (the service is at its limit), kept apart so callers can retry it.
#[derive(Debug)]
struct Busy(String);

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BUSY: {}", self.0)
    }
}

impl std::error::Error for Busy {}

pub(crate) fn call<T>(res: BinderResult<T>, what: &str) -> Result<T> {
    res.map_err(|s| match CallError::from_status(&s) {
        CallError::Service {
            code: c,
            message: m,
        } if c == ErrorCode::BUSY.0 => anyhow::Error::new(Busy(m)).context(what.to_string()),
        CallError::Service {
            code: c,
            message: m,
        } => anyhow!("{what}: {} ({c}): {m}", error_code_name(c)),
        CallError::Binder(o) => anyhow!("{what}: {o}"),
    })
}

pub(crate) fn heaps(l: &Loader) -> Result<Vec<HeapInfo>> {
    let h = call(l.getHeaps(), "getHeaps")?;
    ensure!(!h.is_empty(), "getHeaps returned no heap");
    Ok(h)
}

/// Checks a LoadResult's bookkeeping and the buffer's contents against `file[offset..+data]`.
/// `heaps` are the heaps the result may come from: the one requested, or for an empty
/// heapName all of getHeaps() (default first). A service may place a default-heap load it
/// cannot fit in the default heap (udmabuf's size limit) in another one; that is reported,
/// not failed, but the result must then describe that heap truthfully.
fn check_result(
    r: &LoadResult,
    heaps: &[HeapInfo],
    req: &LoadRequest,
    file: &Path,
    offset: u64,
    data: u64,
) -> Result<()> {
    let buf = r.buffer.as_ref().context("LoadResult.buffer is null")?;
    if !req.heapName.is_empty() {
        ensure!(
            r.heapName == req.heapName,
            "heapName {:?} != requested heap {:?}",
            r.heapName,
            req.heapName
        );
    }
    let heap = heaps
        .iter()
        .find(|h| h.name == r.heapName)
        .with_context(|| format!("heapName {:?} is none of {heaps:?}", r.heapName))?;
    if req.heapName.is_empty() && heap.name != heaps[0].name {
        eprintln!(
            "note: a default-heap load of {data} bytes came from heap {:?}, not the default {:?}",
            heap.name, heaps[0].name
        );
    }
    ensure!(
        r.dataLength == data as i64,
        "dataLength {} != {data}",
        r.dataLength
    );
    let want_size = r.bufferSize as u64;
    ensure!(
        buffer_size_ok(data, want_size),
        "bufferSize {} != {} ({data} rounded up to a page)",
        r.bufferSize,
        round_up_to_page(data)
    );
    ensure!(
        r.bufferKind == heap.kind,
        "bufferKind {:?} != the heap's kind {:?}",
        r.bufferKind,
        heap.kind
    );
    if data == 0 {
        ensure!(
            r.ioPath == IoPath::NONE,
            "ioPath {:?} for an empty range, expected NONE",
            r.ioPath
        );
    } else {
        ensure!(
            r.ioPath != IoPath::NONE,
            "ioPath NONE although {data} bytes were loaded"
        );
    }
    ensure!(
        r.allocNanos >= 0 && r.totalNanos >= r.allocNanos,
        "allocNanos {} / totalNanos {} inconsistent",
        r.allocNanos,
        r.totalNanos
    );
    ensure!(
        r.checksumType == req.checksum,
        "checksumType {:?} != requested {:?}",
        r.checksumType,
        req.checksum
    );
    let fd_size = os::fd_size(binder::fd(buf))?;
    ensure!(
        fd_size == want_size,
        "the buffer fd is {fd_size} bytes, bufferSize says {want_size}"
    );
    let exporter = os::dma_buf_exporter(binder::fd(buf))?;
    ensure!(
        exporter.is_some() == heap.isDmaBuf,
        "heap {:?} says isDmaBuf={} but the fd's fdinfo exp_name is {exporter:?}",
        heap.name,
        heap.isDmaBuf
    );
    // udmabuf exports under its module name; a dma-heap under the heap's device name.
    match heap.kind {
        BufferKind::UDMABUF => ensure!(
            exporter.as_deref() == Some("udmabuf"),
            "heap {:?} is UDMABUF but the buffer's exporter is {exporter:?}",
            heap.name
        ),
        BufferKind::DMA_HEAP => ensure!(
            exporter.as_deref().is_some_and(|e| e != "udmabuf"),
            "heap {:?} is DMA_HEAP but the buffer's exporter is {exporter:?}",
            heap.name
        ),
        _ => {}
    }
    // O_DIRECT into the heap's pages needs directIo; DMABUF_REGISTERED does not (the device
    // DMAs into the dma-buf through its io_uring registration, PFNMAP pages or not), but it
    // needs a real dma-buf.
    let direct = [IoPath::DIRECT, IoPath::DIRECT_REGISTERED];
    ensure!(
        heap.directIo || !direct.contains(&r.ioPath),
        "heap {:?} says directIo=false, yet the load reports ioPath {:?}",
        heap.name,
        r.ioPath
    );
    ensure!(
        heap.isDmaBuf || r.ioPath != IoPath::DMABUF_REGISTERED,
        "heap {:?} says isDmaBuf=false, yet the load reports ioPath DMABUF_REGISTERED",
        heap.name
    );
    verify_fd_contents(binder::fd(buf), want_size, file, offset, data)
        .with_context(|| format!("contents of a buffer from heap {:?}", heap.name))?;
    if req.checksum == ChecksumType::XXH3_64 {
        let bytes = os::read_range(file, offset, data)?;
        let want = twox_hash::XxHash3_64::oneshot(&bytes) as i64;
        ensure!(
            r.checksum == want,
            "checksum {:#x} != XXH3-64 of the data {:#x}",
            r.checksum as u64,
            want as u64
        );
    }
    Ok(())
}

/// What an async load told its callback.
#[derive(Debug)]
enum Event {
    Progress(i64, i64),
    Complete(LoadResult),
    Error(i32, String),
    /// The callback could not take over the result (e.g. dup failed).
    Broken(String),
}

struct Recorder(Mutex<Sender<Event>>);

impl binder::Interface for Recorder {}

impl Recorder {
    fn send(&self, e: Event) {
        let _ = self.0.lock().unwrap_or_else(|e| e.into_inner()).send(e);
    }
}

impl ILoadCallback for Recorder {
    fn onProgress(&self, done: i64, total: i64) -> BinderResult<()> {
        self.send(Event::Progress(done, total));
        Ok(())
    }
    fn onComplete(&self, r: &LoadResult) -> BinderResult<()> {
        // A callback only borrows its argument: keep a copy with our own dup of the buffer.
        self.send(match clone_result(r) {
            Ok(r) => Event::Complete(r),
            Err(e) => Event::Broken(format!("{e:#}")),
        });
        Ok(())
    }
    fn onError(&self, code: i32, msg: &str) -> BinderResult<()> {
        self.send(Event::Error(code, msg.to_string()));
        Ok(())
    }
}

struct AsyncLoad {
    task: binder::Strong<dyn ILoadTask>,
    rx: Receiver<Event>,
}

enum End {
    Complete(LoadResult),
    Error(i32, String),
}

/// The events of one async load: progress reports, then exactly one terminal event, then
/// silence.
struct Outcome {
    progress: Vec<(i64, i64)>,
    end: End,
}

fn start_async(l: &Loader, fd: &ParcelFileDescriptor, req: &LoadRequest) -> Result<AsyncLoad> {
    let (tx, rx) = channel();
    let cb = binder::new_callback(Recorder(Mutex::new(tx)));
    let task = call(l.loadAsync(fd, req, &cb), "loadAsync")?;
    Ok(AsyncLoad { task, rx })
}

impl AsyncLoad {
    fn wait(self) -> Result<Outcome> {
        let deadline = Instant::now() + ASYNC_TIMEOUT;
        let mut progress = Vec::new();
        let end = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Event::Progress(d, t)) => progress.push((d, t)),
                Ok(Event::Complete(r)) => break End::Complete(r),
                Ok(Event::Error(c, m)) => break End::Error(c, m),
                Ok(Event::Broken(m)) => bail!("callback could not keep the result: {m}"),
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "no onComplete/onError within {ASYNC_TIMEOUT:?} ({} progress reports)",
                        progress.len()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("the callback was released without onComplete/onError")
                }
            }
        };
        // Exactly one terminal event and nothing after it.
        if let Ok(e) = self.rx.recv_timeout(QUIET_PERIOD) {
            bail!("event after the terminal one: {e:?}");
        }
        drop(self.task);
        Ok(Outcome { progress, end })
    }
}

/// Progress must be monotonic, with a constant total equal to `total`, and end at it.
fn check_progress(p: &[(i64, i64)], total: u64) -> Result<()> {
    if total == 0 && p.is_empty() {
        // Nothing to report for an empty load.
        return Ok(());
    }
    ensure!(
        !p.is_empty(),
        "no onProgress at all for a {total}-byte load"
    );
    let mut last = 0i64;
    for (i, &(d, t)) in p.iter().enumerate() {
        ensure!(
            t == total as i64,
            "onProgress #{i}: bytesTotal {t} != {total}"
        );
        ensure!(
            d >= last,
            "onProgress #{i}: bytesDone went back from {last} to {d}"
        );
        ensure!(d <= t, "onProgress #{i}: bytesDone {d} > bytesTotal {t}");
        last = d;
    }
    ensure!(
        last == total as i64,
        "last onProgress says {last} of {total} bytes"
    );
    Ok(())
}

/// Loads `file[offset..offset+length]` (length -1 = to EOF) through `api` on the default heap
/// and checks everything; `data` is the expected number of bytes.
fn load_and_check(
    l: &Loader,
    api: Api,
    file: &Path,
    offset: u64,
    length: i64,
    data: u64,
) -> Result<()> {
    let hs = heaps(l)?;
    let heap = &hs[0];
    let fd = open_ro(file)?;
    let req = request(offset as i64, length);
    match api {
        Api::LoadFile => {
            ensure!(
                offset == 0 && length == -1,
                "loadFile loads whole files only"
            );
            let buf = call(l.loadFile(&fd), "loadFile")?;
            let size = os::fd_size(binder::fd(&buf))?;
            let want = size;
            ensure!(
                buffer_size_ok(data, size),
                "loadFile buffer is {size} bytes, expected {} ({data} rounded up to a page)",
                round_up_to_page(data)
            );
            let exporter = os::dma_buf_exporter(binder::fd(&buf))?;
            ensure!(
                exporter.is_some() == heap.isDmaBuf,
                "default heap {:?} isDmaBuf={} but exp_name is {exporter:?}",
                heap.name,
                heap.isDmaBuf
            );
            verify_fd_contents(binder::fd(&buf), want, file, 0, data)
        }
        Api::Load => {
            let r = call(l.load(&fd, &req), "load")?;
            check_result(&r, &hs, &req, file, offset, data)
        }
        Api::LoadAsync => {
            let out = start_async(l, &fd, &req)?.wait()?;
            match out.end {
                End::Complete(r) => {
                    check_progress(&out.progress, data)?;
                    check_result(&r, &hs, &req, file, offset, data)
                }
                End::Error(c, m) if c == ErrorCode::BUSY.0 => {
                    Err(anyhow::Error::new(Busy(m)).context("loadAsync onError"))
                }
                End::Error(c, m) => bail!(
                    "loadAsync reported onError {} ({c}): {m}",
                    error_code_name(c)
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// interface

/// The hash frozen in aidl_api/vendor.dmabufloader/<version>/.hash at build time.
fn frozen_hash(version: i32) -> Option<&'static str> {
    match version {
        1 => option_env!("VTS_FROZEN_AIDL_HASH_1"),
        2 => option_env!("VTS_FROZEN_AIDL_HASH_2"),
        _ => None,
    }
}

/// The instance's interface version (a v2 suite runs against v1 instances too, skipping the
/// v2 cases).
pub(crate) fn remote_version(l: &Loader) -> Result<i32> {
    call(l.getInterfaceVersion(), "getInterfaceVersion")
}

fn interface_version(inst: &Instance) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let v = remote_version(&l)?;
    ensure!(
        v >= 1,
        "getInterfaceVersion = {v}: frozen versions start at 1"
    );
    if frozen_hash(1).is_some() {
        ensure!(
            frozen_hash(binder::compiled_version()).is_some(),
            "this suite was built against version {}, which is not frozen in aidl_api/",
            binder::compiled_version()
        );
    }
    eprintln!(
        "note: instance reports version {v}; this suite was built against version {}",
        binder::compiled_version()
    );
    Ok(())
}

fn interface_hash(inst: &Instance) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let h = call(l.getInterfaceHash(), "getInterfaceHash")?;
    let v = remote_version(&l)?;
    ensure!(!h.is_empty(), "getInterfaceHash is empty");
    if v == binder::compiled_version() {
        ensure!(
            h == binder::compiled_hash(),
            "getInterfaceHash {h:?} != the hash of the bindings {:?} (same version {v})",
            binder::compiled_hash()
        );
    }
    // A frozen version's hash is fixed forever: the service must report the one of the version
    // it claims (a v2 service to a v1 client: the v2 hash; the client compares versions).
    match frozen_hash(v) {
        Some(frozen) => ensure!(
            h == frozen,
            "getInterfaceHash {h:?} != frozen aidl_api/vendor.dmabufloader/{v}/.hash {frozen:?}"
        ),
        None => eprintln!(
            "note: version {v} has no frozen aidl_api/vendor.dmabufloader/{v}/.hash at build time; hash {h:?} not checked"
        ),
    }
    Ok(())
}

fn service_info(inst: &Instance) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let si = call(l.getServiceInfo(), "getServiceInfo")?;
    ensure!(
        !si.implementation.trim().is_empty(),
        "ServiceInfo.implementation is empty"
    );
    ensure!(
        si.maxLoadBytes > 0,
        "ServiceInfo.maxLoadBytes = {}",
        si.maxLoadBytes
    );
    let here = os::kernel_release();
    ensure!(
        si.kernelRelease == here,
        "ServiceInfo.kernelRelease {:?} != uname -r {here:?}",
        si.kernelRelease
    );
    ensure!(
        !si.ioUringDmabufRegbuf || si.ioUring,
        "ioUringDmabufRegbuf without ioUring: {si:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// contents

fn contents(inst: &Instance, env: &Env, api: Api, size: u64) -> Result<()> {
    let file = env.pattern_file(size, 1)?;
    let (_c, l) = loader(inst)?;
    load_and_check(&l, api, &file, 0, -1, size)
}

fn checksum_xxh3(inst: &Instance, env: &Env) -> Result<()> {
    let size = MIB + 7;
    let file = env.pattern_file(size, 1)?;
    let (_c, l) = loader(inst)?;
    let hs = heaps(&l)?;
    for (offset, length) in [(0i64, -1i64), (13, 100_000)] {
        let req = LoadRequest {
            offset,
            length,
            checksum: ChecksumType::XXH3_64,
            ..Default::default()
        };
        let data = if length < 0 {
            size - offset as u64
        } else {
            length as u64
        };
        let r = call(l.load(&open_ro(&file)?, &req), "load with XXH3_64")?;
        check_result(&r, &hs, &req, &file, offset as u64, data)
            .with_context(|| format!("load, range {offset}+{length}"))?;
        // The result that onComplete carries has the checksum too.
        match start_async(&l, &open_ro(&file)?, &req)?.wait()?.end {
            End::Complete(r) => check_result(&r, &hs, &req, &file, offset as u64, data)
                .with_context(|| format!("loadAsync, range {offset}+{length}"))?,
            End::Error(c, m) => bail!("loadAsync with XXH3_64: {} ({c}): {m}", error_code_name(c)),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ranges

/// The file the range cases use: 3 pages + 123 bytes.
fn range_file_size() -> u64 {
    3 * page_size() + 123
}

#[derive(Clone, Copy)]
struct Range {
    offset: u64,
    length: i64,
}

fn ranges() -> Vec<(&'static str, Range)> {
    let p = page_size();
    let size = range_file_size();
    vec![
        (
            "whole_explicit_length",
            Range {
                offset: 0,
                length: size as i64,
            },
        ),
        (
            "unaligned_offset_short",
            Range {
                offset: 1,
                length: 100,
            },
        ),
        (
            "unaligned_across_page_boundary",
            Range {
                offset: p - 3,
                length: 7,
            },
        ),
        (
            "unaligned_offset_multi_page",
            Range {
                offset: 517,
                length: (2 * p + 9) as i64,
            },
        ),
        (
            "aligned_offset_to_eof",
            Range {
                offset: p,
                length: -1,
            },
        ),
        (
            "unaligned_offset_to_eof",
            Range {
                offset: p + 17,
                length: -1,
            },
        ),
        (
            "last_byte",
            Range {
                offset: size - 1,
                length: 1,
            },
        ),
        (
            "last_byte_to_eof",
            Range {
                offset: size - 1,
                length: -1,
            },
        ),
        (
            "exact_end_explicit",
            Range {
                offset: 5,
                length: (size - 5) as i64,
            },
        ),
    ]
}

fn range_ok(inst: &Instance, env: &Env, r: Range) -> Result<()> {
    let size = range_file_size();
    let file = env.pattern_file(size, 7)?;
    let data = if r.length < 0 {
        size - r.offset
    } else {
        r.length as u64
    };
    let (_c, l) = loader(inst)?;
    load_and_check(&l, Api::Load, &file, r.offset, r.length, data)
}

fn range_to_eof_async(inst: &Instance, env: &Env) -> Result<()> {
    let size = range_file_size();
    let file = env.pattern_file(size, 7)?;
    let (_c, l) = loader(inst)?;
    load_and_check(&l, Api::LoadAsync, &file, 4097, -1, size - 4097)
}

fn bad_ranges() -> Vec<(&'static str, i64, i64)> {
    let size = range_file_size() as i64;
    vec![
        ("offset_past_eof", size + 1, -1),
        ("offset_past_eof_with_length", size + 1, 1),
        ("length_past_eof", 0, size + 1),
        ("end_past_eof_unaligned", 3, size - 2),
        ("negative_offset", -1, 10),
        ("negative_length", 0, -2),
        ("offset_plus_length_overflows", i64::MAX, 2),
        ("length_max", 1, i64::MAX),
    ]
}

fn range_invalid(inst: &Instance, env: &Env, offset: i64, length: i64) -> Result<()> {
    let file = env.pattern_file(range_file_size(), 7)?;
    let (_c, l) = loader(inst)?;
    let res = l.load(&open_ro(&file)?, &request(offset, length));
    expect_code(
        res,
        ErrorCode::INVALID_RANGE,
        &format!("load(offset={offset}, length={length})"),
    )
}

// ---------------------------------------------------------------------------------------------
// heaps

fn heaps_list(inst: &Instance) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let hs = heaps(&l)?;
    let mut names: Vec<&str> = hs.iter().map(|h| h.name.as_str()).collect();
    for h in &hs {
        ensure!(!h.name.is_empty(), "a heap has an empty name: {h:?}");
        let want_dmabuf = match h.kind {
            BufferKind::DMA_HEAP | BufferKind::UDMABUF => true,
            BufferKind::MEMFD => false,
            k => bail!("heap {:?} has an unknown BufferKind {k:?}", h.name),
        };
        ensure!(
            h.isDmaBuf == want_dmabuf,
            "heap {:?}: kind {:?} but isDmaBuf={}",
            h.name,
            h.kind,
            h.isDmaBuf
        );
    }
    names.sort();
    names.dedup();
    ensure!(names.len() == hs.len(), "duplicate heap names: {hs:?}");
    Ok(())
}

fn heaps_each(inst: &Instance, env: &Env) -> Result<()> {
    let size = 3 * page_size() + 5;
    let file = env.pattern_file(size, 11)?;
    let big_size = 4 * MIB + 7;
    let big = env.pattern_file(big_size, 13)?;
    let (_c, l) = loader(inst)?;
    for h in heaps(&l)? {
        let req = LoadRequest {
            heapName: h.name.clone(),
            ..Default::default()
        };
        let r = call(
            l.load(&open_ro(&file)?, &req),
            &format!("load on heap {:?}", h.name),
        )?;
        check_result(&r, std::slice::from_ref(&h), &req, &file, 0, size)
            .with_context(|| format!("heap {:?}", h.name))?;
        let buf = r.buffer.as_ref().context("no buffer")?;
        if h.isDmaBuf {
            // check_result already bracketed its read with SYNC; do it once more on its own.
            os::dma_buf_begin_cpu_read(binder::fd(buf))
                .with_context(|| format!("heap {:?}", h.name))?;
            os::dma_buf_end_cpu_read(binder::fd(buf))
                .with_context(|| format!("heap {:?}", h.name))?;
        }
        // A writable result maps writable.
        os::Mapping::new(
            binder::fd(buf),
            r.bufferSize as u64,
            nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
        )
        .map_err(|e| {
            anyhow!(
                "heap {:?}: a writable result cannot be mapped PROT_WRITE: {e}",
                h.name
            )
        })?;
        // Bigger, unaligned ranges on every heap: these take the O_DIRECT paths where a heap
        // has them, with unaligned heads and tails to patch up.
        for (offset, length) in [(0i64, -1i64), (4097, -1), (511, (MIB + 3) as i64)] {
            let req = LoadRequest {
                heapName: h.name.clone(),
                offset,
                length,
                ..Default::default()
            };
            let data = if length < 0 {
                big_size - offset as u64
            } else {
                length as u64
            };
            let what = format!("heap {:?}, range {offset}+{length}", h.name);
            let r = call(l.load(&open_ro(&big)?, &req), &what)?;
            check_result(
                &r,
                std::slice::from_ref(&h),
                &req,
                &big,
                offset as u64,
                data,
            )
            .with_context(|| what.clone())?;
        }
    }
    Ok(())
}

fn heaps_read_only(inst: &Instance, env: &Env) -> Result<()> {
    let size = 2 * page_size() + 99;
    let file = env.pattern_file(size, 12)?;
    let (_c, l) = loader(inst)?;
    let (mut honoured, mut refused) = (Vec::new(), Vec::new());
    for h in heaps(&l)? {
        let what = format!("read-only buffer from heap {:?}", h.name);
        let req = LoadRequest {
            heapName: h.name.clone(),
            readOnly: true,
            ..Default::default()
        };
        // A dma-buf's rights are fixed at export (udmabuf always exports O_RDWR, and a
        // dma-heap buffer the service must fill cannot be O_RDONLY), so a heap may refuse
        // readOnly with INVALID_ARGUMENT. What it must never do is hand out a writable buffer.
        // (Documented nowhere in the AIDL yet: see the VTS report.)
        let res = l.load(&open_ro(&file)?, &req);
        if let Err(s) = &res {
            if let CallError::Service {
                code: c,
                message: m,
            } = CallError::from_status(s)
            {
                if c == ErrorCode::INVALID_ARGUMENT.0 {
                    // A memfd can be sealed read-only: no excuse there.
                    ensure!(
                        h.isDmaBuf,
                        "heap {:?} ({:?}, not a dma-buf) refuses readOnly: {m}",
                        h.name,
                        h.kind
                    );
                    eprintln!("note: heap {:?} refuses readOnly: {m}", h.name);
                    refused.push(h.name.clone());
                    continue;
                }
            }
        }
        let r = call(res, &format!("load readOnly on heap {:?}", h.name))?;
        honoured.push(h.name.clone());
        check_result(&r, std::slice::from_ref(&h), &req, &file, 0, size)
            .with_context(|| what.clone())?;
        let buf = r.buffer.as_ref().context("no buffer")?;
        let len = r.bufferSize as u64;
        os::expect_no_writable_mapping(binder::fd(buf), len, &what)?;
        // A read-only shared mapping cannot be upgraded either.
        let m = os::Mapping::read_only(binder::fd(buf), len)?;
        ensure!(
            m.try_make_writable().is_err(),
            "{what}: mprotect(PROT_WRITE) of its MAP_SHARED mapping succeeded"
        );
        drop(m);
        // Nor can it be reopened writable through /proc: an unsealed memfd could be. (Not
        // tried on dma-bufs: they are not meant to be opened by path at all.)
        let reopened = if h.isDmaBuf {
            None
        } else {
            os::reopen(binder::fd(buf), OFlag::O_RDWR).ok()
        };
        if let Some(rw) = reopened {
            os::expect_no_writable_mapping(
                rw.as_fd(),
                len,
                &format!("{what} reopened O_RDWR via /proc/self/fd"),
            )?;
        }
    }
    if honoured.is_empty() {
        eprintln!("note: no heap honours readOnly (refused by {refused:?})");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bad inputs

/// `fd` must be refused with `want` by loadFile and by load.
fn expect_fd_refused(l: &Loader, fd: OwnedFd, want: ErrorCode, what: &str) -> Result<()> {
    let p = pfd(fd);
    expect_code(l.loadFile(&p), want, &format!("loadFile({what})"))?;
    expect_code(
        l.load(&p, &LoadRequest::default()),
        want,
        &format!("load({what})"),
    )?;
    expect_async_refused(
        l,
        &p,
        &LoadRequest::default(),
        want,
        &format!("loadAsync({what})"),
    )
}

/// loadAsync of a request that cannot start. The frozen AIDL allows two shapes: loadAsync
/// throws (no load started, so the callback must then hear nothing), or it returns a task and
/// the callback gets exactly one onError. Either way with the code `want` and no buffer.
fn expect_async_refused(
    l: &Loader,
    fd: &ParcelFileDescriptor,
    req: &LoadRequest,
    want: ErrorCode,
    what: &str,
) -> Result<()> {
    let (tx, rx) = channel();
    let cb = binder::new_callback(Recorder(Mutex::new(tx)));
    match l.loadAsync(fd, req, &cb) {
        Ok(task) => match (AsyncLoad { task, rx }).wait()?.end {
            End::Error(c, m) => ensure!(
                c == want.0,
                "{what}: onError {} ({c}) \"{m}\", expected {}",
                error_code_name(c),
                error_code_name(want.0)
            ),
            End::Complete(r) => bail!("{what}: completed: {r:?}"),
        },
        Err(s) => {
            expect_code::<()>(Err(s), want, what)?;
            if let Ok(e) = rx.recv_timeout(QUIET_PERIOD) {
                bail!(
                    "{what} threw {}, yet the callback got {e:?}",
                    error_code_name(want.0)
                );
            }
        }
    }
    Ok(())
}

/// The service must still answer after a bad request.
fn still_alive(l: &Loader) -> Result<()> {
    call(l.getServiceInfo(), "getServiceInfo after the bad request").map(drop)
}

fn bad_pipe(inst: &Instance) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let (r, w) = nix::unistd::pipe().context("pipe")?;
    expect_fd_refused(&l, r, ErrorCode::UNSUPPORTED_FILE_TYPE, "pipe read end")?;
    drop(w);
    still_alive(&l)
}

fn bad_socket(inst: &Instance) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let (a, b) = std::os::unix::net::UnixStream::pair().context("socketpair")?;
    expect_fd_refused(
        &l,
        a.into(),
        ErrorCode::UNSUPPORTED_FILE_TYPE,
        "unix socket",
    )?;
    drop(b);
    still_alive(&l)
}

fn bad_directory(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let fd = os::open_with(env.dir(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    expect_fd_refused(&l, fd, ErrorCode::UNSUPPORTED_FILE_TYPE, "directory")?;
    still_alive(&l)
}

fn bad_o_path(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let file = env.pattern_file(page_size(), 3)?;
    let fd = os::open_with(&file, OFlag::O_PATH)?;
    let p = pfd(fd);
    let kernel = matches!(inst.target, binder::Target::Kernel { .. });
    for (what, res) in [
        ("loadFile", l.loadFile(&p).map(drop)),
        ("load", l.load(&p, &LoadRequest::default()).map(drop)),
    ] {
        match res {
            Err(s) if kernel && matches!(CallError::from_status(&s), CallError::Binder(_)) => {
                // Kernel binder cannot carry an O_PATH fd at all (binder_translate_fd uses
                // fget(), which refuses FMODE_PATH): the transaction fails before the service
                // sees it. That protects the service just as well.
                eprintln!("note: {what}(O_PATH) refused by the binder driver: {s:?}");
            }
            other => expect_code(
                other,
                ErrorCode::PATH_ONLY_FD,
                &format!("{what}(O_PATH fd)"),
            )?,
        }
    }
    if !kernel {
        expect_async_refused(
            &l,
            &p,
            &LoadRequest::default(),
            ErrorCode::PATH_ONLY_FD,
            "loadAsync(O_PATH fd)",
        )?;
    }
    still_alive(&l)
}

fn bad_write_only(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let path = env.path("write-only.bin");
    os::write_pattern_file(&path, 3 * page_size(), 4)?;
    let fd = os::open_with(&path, OFlag::O_WRONLY)?;
    expect_fd_refused(&l, fd, ErrorCode::NOT_READABLE, "O_WRONLY fd")?;
    still_alive(&l)
}

fn bad_char_device(inst: &Instance, dev: &str) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let fd = os::open_with(Path::new(dev), OFlag::O_RDONLY)?;
    expect_fd_refused(&l, fd, ErrorCode::UNSUPPORTED_FILE_TYPE, dev)?;
    still_alive(&l)
}

fn bad_range_past_eof(inst: &Instance, env: &Env) -> Result<()> {
    let size = 10 * page_size();
    let file = env.pattern_file(size, 5)?;
    let (_c, l) = loader(inst)?;
    let fd = open_ro(&file)?;
    expect_code(
        l.load(&fd, &request(size as i64 + 1, -1)),
        ErrorCode::INVALID_RANGE,
        "offset one past EOF",
    )?;
    expect_code(
        l.load(&fd, &request(page_size() as i64, size as i64)),
        ErrorCode::INVALID_RANGE,
        "end one page past EOF",
    )?;
    still_alive(&l)
}

fn bad_over_limit(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let max = call(l.getServiceInfo(), "getServiceInfo")?.maxLoadBytes;
    ensure!(max > 0, "maxLoadBytes = {max}");
    let path = env.path("over-limit.sparse");
    let size = max as u64 + 1;
    os::write_sparse_file(&path, size)
        .with_context(|| format!("sparse file of maxLoadBytes+1 = {size} bytes"))?;
    let fd = open_ro(&path)?;
    let r = (|| {
        expect_code(
            l.loadFile(&fd),
            ErrorCode::TOO_LARGE,
            &format!("loadFile of a {size}-byte file (maxLoadBytes {max})"),
        )?;
        expect_code(
            l.load(&fd, &LoadRequest::default()),
            ErrorCode::TOO_LARGE,
            "load of the whole file",
        )?;
        expect_code(
            l.load(&fd, &request(0, size as i64)),
            ErrorCode::TOO_LARGE,
            "load(0, maxLoadBytes+1)",
        )?;
        // The limit is on the load, not the file: a small range of the big file is fine.
        let small = call(
            l.load(&fd, &request(max - 10, 11)),
            "load of 11 bytes at the end of the big file",
        )?;
        ensure!(
            small.dataLength == 11,
            "dataLength {} != 11",
            small.dataLength
        );
        let buf = small.buffer.as_ref().context("no buffer")?;
        verify_fd_contents(
            binder::fd(buf),
            small.bufferSize as u64,
            &path,
            max as u64 - 10,
            11,
        )
    })();
    let _ = std::fs::remove_file(&path);
    r?;
    still_alive(&l)
}

fn bad_unknown_heap(inst: &Instance, env: &Env) -> Result<()> {
    let file = env.pattern_file(page_size(), 3)?;
    let (_c, l) = loader(inst)?;
    for name in ["no-such-heap-vts", "../system", "system\0"] {
        let req = LoadRequest {
            heapName: name.into(),
            ..Default::default()
        };
        expect_code(
            l.load(&open_ro(&file)?, &req),
            ErrorCode::UNKNOWN_HEAP,
            &format!("heapName {name:?}"),
        )?;
    }
    still_alive(&l)
}

fn bad_unknown_checksum(inst: &Instance, env: &Env) -> Result<()> {
    let file = env.pattern_file(page_size(), 3)?;
    let (_c, l) = loader(inst)?;
    let req = LoadRequest {
        checksum: ChecksumType(99),
        ..Default::default()
    };
    expect_code(
        l.load(&open_ro(&file)?, &req),
        ErrorCode::INVALID_ARGUMENT,
        "checksum type 99",
    )?;
    still_alive(&l)
}

/// The AIDL argument is a non-nullable ParcelFileDescriptor, so a correct proxy never sends
/// null; a hand-written parcel does. The generated stub must reject it before the service
/// code runs (UNEXPECTED_NULL / BAD_VALUE), or the service must answer BAD_FD; it must never
/// succeed, and the service must survive.
fn bad_null_fd(inst: &Instance) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let st = binder::load_file_with_null_fd(&l)?;
    ensure!(!st.is_ok(), "loadFile(null fd) succeeded");
    match CallError::from_status(&st) {
        CallError::Service { code: c, .. } if c == ErrorCode::BAD_FD.0 => {}
        CallError::Service {
            code: c,
            message: m,
        } => bail!(
            "loadFile(null fd): {} ({c}) \"{m}\", expected BAD_FD or a binder-level rejection",
            error_code_name(c)
        ),
        CallError::Binder(o) => {
            eprintln!("note: loadFile(null fd) rejected by the binder layer: {o}")
        }
    }
    still_alive(&l)
}

// ---------------------------------------------------------------------------------------------
// async

fn async_progress(inst: &Instance, env: &Env) -> Result<()> {
    // The 64 MiB file of the contents cases: written once per run.
    let size = 64 * MIB;
    let file = env.pattern_file(size, 1)?;
    let (_c, l) = loader(inst)?;
    load_and_check(&l, Api::LoadAsync, &file, 0, -1, size)
}

fn async_cancel(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let max = call(l.getServiceInfo(), "getServiceInfo")?.maxLoadBytes as u64;
    // Big enough that a cancel sent right after loadAsync returns lands mid-load, even on a
    // fast host; sparse, so creating it costs nothing (the service still has to fill every page).
    let size = (256 * MIB).min(max);
    let path = env.path("cancel.sparse");
    os::write_sparse_file(&path, size)?;
    let mut landed = 0;
    let mut completed = 0;
    let r = (|| {
        for attempt in 0..5 {
            let a = start_async(&l, &open_ro(&path)?, &LoadRequest::default())?;
            let t0 = Instant::now();
            call(a.task.cancel(), "cancel")?;
            let cancel_took = t0.elapsed();
            // A second cancel does nothing.
            call(a.task.cancel(), "second cancel")?;
            let out = a.wait().with_context(|| format!("attempt {attempt}"))?;
            for w in out.progress.windows(2) {
                ensure!(w[1].0 >= w[0].0, "progress went back: {:?}", out.progress);
            }
            match out.end {
                End::Error(c, m) => {
                    ensure!(
                        c == ErrorCode::CANCELLED.0,
                        "cancelled load ended with {} ({c}) \"{m}\", expected CANCELLED",
                        error_code_name(c)
                    );
                    landed += 1;
                }
                End::Complete(r) => {
                    // A load may beat the cancel only if it is small: cancel() returned
                    // within {cancel_took:?} of loadAsync(), and no service fills 64 MiB of
                    // pages that fast. Then it must at least be a whole buffer.
                    ensure!(
                        size < 64 * MIB,
                        "attempt {attempt}: a {size}-byte load completed although cancel() \
                         returned {cancel_took:?} after loadAsync(): the cancel was ignored"
                    );
                    ensure!(
                        r.dataLength == size as i64,
                        "a load that beat cancel has dataLength {}",
                        r.dataLength
                    );
                    completed += 1;
                }
            }
            if landed >= 2 {
                break;
            }
        }
        ensure!(landed > 0, "cancel never landed: {completed} loads of {size} bytes completed although cancel() was called at once");
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    r?;
    still_alive(&l)
}

fn async_cancel_after_complete(inst: &Instance, env: &Env) -> Result<()> {
    let size = 5 * page_size() + 1;
    let file = env.pattern_file(size, 22)?;
    let (_c, l) = loader(inst)?;
    let hs = heaps(&l)?;
    let a = start_async(&l, &open_ro(&file)?, &LoadRequest::default())?;
    // Wait for the end by hand so the task stays usable afterwards.
    let deadline = Instant::now() + ASYNC_TIMEOUT;
    let result = loop {
        match a
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(Event::Progress(..)) => {}
            Ok(Event::Complete(r)) => break r,
            Ok(e) => bail!("unexpected event {e:?}"),
            Err(e) => bail!("no completion: {e}"),
        }
    };
    call(a.task.cancel(), "cancel after onComplete")?;
    if let Ok(e) = a.rx.recv_timeout(QUIET_PERIOD) {
        bail!("cancel after onComplete produced an event: {e:?}");
    }
    check_result(&result, &hs, &LoadRequest::default(), &file, 0, size)
}

/// A request that cannot start (range past EOF) through loadAsync. The frozen AIDL allows two
/// shapes: loadAsync itself throws (no load started, so the callback must then hear nothing),
/// or it returns a task and the callback gets exactly one onError. Either way the code is
/// INVALID_RANGE and no buffer is handed out. (A load that fails after it started always
/// reports through the callback: see async.cancel_yields_no_buffer and
/// async.file_truncated_during_load.)
fn async_error_via_callback(inst: &Instance, env: &Env) -> Result<()> {
    let size = 4 * page_size();
    let file = env.pattern_file(size, 23)?;
    let (_c, l) = loader(inst)?;
    let req = request(size as i64 + 1, -1);
    expect_async_refused(
        &l,
        &open_ro(&file)?,
        &req,
        ErrorCode::INVALID_RANGE,
        "loadAsync(range past EOF)",
    )?;
    still_alive(&l)
}

// ---------------------------------------------------------------------------------------------
// concurrency and endurance

fn concurrency(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let files: Vec<(std::path::PathBuf, u64)> = (0..8u64)
        .map(|i| {
            let size = 8 * MIB + i * 4099 + 1;
            env.pattern_file(size, 100 + i).map(|p| (p, size))
        })
        .collect::<Result<_>>()?;
    // All eight start together. BUSY is the documented answer of a service at its limit of
    // concurrent loads (ServiceInfo does not say what the limit is), so it is retried; any
    // other failure, or a wrong byte, fails the case.
    let start = std::sync::Barrier::new(files.len());
    let busy = std::sync::atomic::AtomicU32::new(0);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(i, (p, size))| {
                let (l, start, busy) = (l.clone(), &start, &busy);
                s.spawn(move || {
                    let api = Api::ALL[i % 3];
                    start.wait();
                    (0..3)
                        .try_for_each(|_| {
                            let deadline = Instant::now() + Duration::from_secs(60);
                            loop {
                                match load_and_check(&l, api, p, 0, -1, *size) {
                                    Err(e)
                                        if e.downcast_ref::<Busy>().is_some()
                                            && Instant::now() < deadline =>
                                    {
                                        busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                        std::thread::sleep(Duration::from_millis(2));
                                    }
                                    r => return r,
                                }
                            }
                        })
                        .with_context(|| format!("thread {i} ({} of {})", api.name(), p.display()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("thread panicked"))))
            .collect()
    });
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    ensure!(
        errors.is_empty(),
        "{} of 8 threads failed:\n{}",
        errors.len(),
        errors.join("\n")
    );
    let busy = busy.into_inner();
    if busy > 0 {
        eprintln!("note: {busy} BUSY answers were retried (the service's concurrency limit)");
    }
    Ok(())
}

fn endurance(inst: &Instance, env: &Env) -> Result<()> {
    let size = 3 * page_size() + 5;
    let file = env.pattern_file(size, 31)?;
    let (_c, l) = loader(inst)?;
    // Warm up every path once so lazily created threads/connections are not counted.
    for api in Api::ALL {
        load_and_check(&l, api, &file, 0, -1, size)?;
    }
    let before = os::open_fd_count()?;
    for n in 0..1000 {
        let api = Api::ALL[n % 3];
        load_and_check(&l, api, &file, 0, -1, size)
            .with_context(|| format!("load #{n} ({})", api.name()))?;
    }
    let after = os::open_fd_count()?;
    ensure!(
        after <= before,
        "fd count grew from {before} to {after} over 1000 loads"
    );
    still_alive(&l)
}

/// The client's fd shares its open file description with the service: a load must leave its
/// file offset and status flags (no O_DIRECT, no O_NONBLOCK) as they were.
fn client_fd_untouched(inst: &Instance, env: &Env) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let size = 2 * MIB + 5;
    let file = env.pattern_file(size, 41)?;
    let (_c, l) = loader(inst)?;
    for api in Api::ALL {
        let mut f = File::open(&file)?;
        f.seek(SeekFrom::Start(12345))?;
        let flags_before = nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let p = pfd(f.try_clone()?);
        match api {
            Api::LoadFile => drop(call(l.loadFile(&p), "loadFile")?),
            Api::Load => drop(call(l.load(&p, &LoadRequest::default()), "load")?),
            Api::LoadAsync => match start_async(&l, &p, &LoadRequest::default())?.wait()?.end {
                End::Complete(_) => {}
                End::Error(c, m) => bail!("loadAsync: {} ({c}): {m}", error_code_name(c)),
            },
        }
        drop(p);
        let pos = f.stream_position()?;
        ensure!(
            pos == 12345,
            "{}: the client's file offset moved from 12345 to {pos}",
            api.name()
        );
        let flags_after = nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        ensure!(
            flags_after == flags_before,
            "{}: the client's file status flags changed from {flags_before:#o} to {flags_after:#o}",
            api.name()
        );
    }
    Ok(())
}

/// A file truncated while it loads: the load ends with FILE_CHANGED (or, if it won the race,
/// completes with every byte of the original contents); it never hands out a buffer with
/// holes where the data was.
fn async_truncated(inst: &Instance, env: &Env) -> Result<()> {
    let (_c, l) = loader(inst)?;
    let max = call(l.getServiceInfo(), "getServiceInfo")?.maxLoadBytes as u64;
    let size = (64 * MIB).min(max);
    let original = env.pattern_file(size, 1)?;
    let hs = heaps(&l)?;
    let path = env.path("truncate-me.bin");
    let mut changed = 0;
    let r = (|| {
        for attempt in 0..3 {
            std::fs::copy(&original, &path).context("copy the pattern file")?;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?;
            let a = start_async(&l, &pfd(f.try_clone()?), &LoadRequest::default())?;
            f.set_len(page_size()).context("truncate during the load")?;
            match a.wait().with_context(|| format!("attempt {attempt}"))?.end {
                End::Error(c, m) => {
                    ensure!(
                        c == ErrorCode::FILE_CHANGED.0,
                        "truncated mid-load: {} ({c}) \"{m}\", expected FILE_CHANGED",
                        error_code_name(c)
                    );
                    changed += 1;
                    break;
                }
                End::Complete(r) => {
                    // The load beat the truncation: it must hold the original bytes.
                    check_result(&r, &hs, &LoadRequest::default(), &original, 0, size)
                        .context("a load that completed before the truncation")?;
                }
            }
        }
        if changed == 0 {
            eprintln!("note: every load beat the truncation; FILE_CHANGED not exercised");
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    r?;
    still_alive(&l)
}

/// The path a load reports must be one the service said it has: no io_uring path without
/// ServiceInfo.ioUring, no dma-buf registration without ioUringDmabufRegbuf.
fn io_path_matches_service_info(inst: &Instance, env: &Env) -> Result<()> {
    let size = 4 * MIB + 7;
    let file = env.pattern_file(size, 13)?;
    let (_c, l) = loader(inst)?;
    let si = call(l.getServiceInfo(), "getServiceInfo")?;
    for h in heaps(&l)? {
        let req = LoadRequest {
            heapName: h.name.clone(),
            ..Default::default()
        };
        let r = call(
            l.load(&open_ro(&file)?, &req),
            &format!("load on heap {:?}", h.name),
        )?;
        check_result(&r, std::slice::from_ref(&h), &req, &file, 0, size)?;
        let uring = [
            IoPath::DIRECT,
            IoPath::DIRECT_REGISTERED,
            IoPath::BUFFERED,
            IoPath::DMABUF_REGISTERED,
        ];
        ensure!(
            si.ioUring || !uring.contains(&r.ioPath),
            "heap {:?}: ioPath {:?} although ServiceInfo.ioUring is false",
            h.name,
            r.ioPath
        );
        ensure!(
            si.ioUringDmabufRegbuf || r.ioPath != IoPath::DMABUF_REGISTERED,
            "heap {:?}: ioPath DMABUF_REGISTERED although ServiceInfo.ioUringDmabufRegbuf is false",
            h.name
        );
        let path = match r.ioPath {
            IoPath::DIRECT_REGISTERED => "DIRECT_REGISTERED",
            IoPath::DIRECT => "DIRECT",
            IoPath::BUFFERED => "BUFFERED",
            IoPath::BUFFERED_SYNC => "BUFFERED_SYNC",
            IoPath::DMABUF_REGISTERED => "DMABUF_REGISTERED",
            IoPath::NONE => "NONE",
            _ => "unknown",
        };
        eprintln!(
            "note: heap {:?} (directIo={}): {size} cold bytes via {path} ({})",
            h.name, h.directIo, r.ioPathReason
        );
    }
    Ok(())
}

/// A memfd is a regular file too, on shmem, which refuses O_DIRECT: the service must fall back
/// to a path that works rather than fail.
fn memfd_source(inst: &Instance) -> Result<()> {
    use std::io::Write as _;
    let size = 3 * MIB + 11;
    let fd =
        nix::sys::memfd::memfd_create(c"vts-source", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
            .context("memfd_create")?;
    let mut f = File::from(fd);
    let mut bytes = Vec::with_capacity(size as usize + 8);
    for w in 0..size.div_ceil(8) {
        bytes.extend_from_slice(&os::pattern_word(61, w).to_le_bytes());
    }
    bytes.truncate(size as usize);
    f.write_all(&bytes).context("fill the memfd")?;
    let (_c, l) = loader(inst)?;
    let hs = heaps(&l)?;
    // Checked against /proc/self/fd/N: the memfd's own path.
    let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    for (offset, length) in [(0i64, -1i64), (4097, 100_003)] {
        let req = request(offset, length);
        let data = if length < 0 { size } else { length as u64 };
        let r = call(l.load(&pfd(f.try_clone()?), &req), "load of a memfd")?;
        check_result(&r, &hs, &req, &path, offset as u64, data)
            .with_context(|| format!("memfd source, range {offset}+{length}"))?;
    }
    Ok(())
}

/// The client's own fd may carry O_DIRECT. The service must still load any range correctly
/// (an unaligned pread on that description would fail with EINVAL) and leave the flag alone.
fn source_opened_o_direct(inst: &Instance, env: &Env) -> Result<()> {
    let size = 2 * MIB + 4099;
    let file = env.pattern_file(size, 62)?;
    let fd = match os::open_with(&file, OFlag::O_RDONLY | OFlag::O_DIRECT) {
        Ok(fd) => fd,
        Err(e) => {
            // tmpfs and some filesystems refuse O_DIRECT opens: nothing to test here.
            eprintln!("note: the scratch filesystem refuses O_DIRECT ({e:#}); case not exercised");
            return Ok(());
        }
    };
    let (_c, l) = loader(inst)?;
    let hs = heaps(&l)?;
    let f = File::from(fd);
    for (offset, length) in [(0i64, -1i64), (13, 70_001), (4096, -1)] {
        let req = request(offset, length);
        let data = if length < 0 {
            size - offset as u64
        } else {
            length as u64
        };
        let r = call(l.load(&pfd(f.try_clone()?), &req), "load of an O_DIRECT fd")?;
        check_result(&r, &hs, &req, &file, offset as u64, data)
            .with_context(|| format!("O_DIRECT source, range {offset}+{length}"))?;
    }
    let flags = OFlag::from_bits_truncate(nix::fcntl::fcntl(
        f.as_raw_fd(),
        nix::fcntl::FcntlArg::F_GETFL,
    )?);
    ensure!(
        flags.contains(OFlag::O_DIRECT),
        "the client's O_DIRECT flag was cleared"
    );
    Ok(())
}

/// Two loads of one file give two buffers: writing into one changes neither the other nor the
/// file (no shared or cached buffer, no mapping of the page cache handed out), on every heap.
fn buffers_are_private(inst: &Instance, env: &Env) -> Result<()> {
    let size = 3 * page_size() + 17;
    let file = env.pattern_file(size, 71)?;
    let (_c, l) = loader(inst)?;
    for h in heaps(&l)? {
        let req = LoadRequest {
            heapName: h.name.clone(),
            ..Default::default()
        };
        let what = format!("heap {:?}", h.name);
        let a = call(l.load(&open_ro(&file)?, &req), &what)?;
        let b = call(l.load(&open_ro(&file)?, &req), &what)?;
        let (fa, fb) = (
            a.buffer.as_ref().context("no buffer")?,
            b.buffer.as_ref().context("no buffer")?,
        );
        let (sa, sb) = (
            nix::sys::stat::fstat(binder::fd(fa).as_raw_fd())?,
            nix::sys::stat::fstat(binder::fd(fb).as_raw_fd())?,
        );
        ensure!(
            (sa.st_dev, sa.st_ino) != (sb.st_dev, sb.st_ino),
            "{what}: two loads returned the same buffer (inode {})",
            sa.st_ino
        );
        let len = a.bufferSize as u64;
        let m = os::Mapping::new(
            binder::fd(fa),
            len,
            nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
        )
        .map_err(|e| anyhow!("{what}: mmap PROT_WRITE of a writable result: {e}"))?;
        if h.isDmaBuf {
            os::dma_buf_begin_cpu_write(binder::fd(fa))?;
        }
        m.fill(0xa5);
        if h.isDmaBuf {
            os::dma_buf_end_cpu_write(binder::fd(fa))?;
        }
        drop(m);
        verify_fd_contents(binder::fd(fb), b.bufferSize as u64, &file, 0, size)
            .with_context(|| format!("{what}: the second buffer after writing into the first"))?;
        let on_disk = os::read_range(&file, 0, size)?;
        ensure!(
            on_disk.iter().enumerate().all(|(i, &byte)| {
                byte == os::pattern_word(71, i as u64 / 8).to_le_bytes()[i % 8]
            }),
            "{what}: writing into a returned buffer changed the file"
        );
    }
    Ok(())
}
