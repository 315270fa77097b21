//! VtsHalDmabufLoaderTargetTest: the VTS suite for vendor.dmabufloader.IDmabufLoader.
//!
//! Every case runs once per instance and is named `<case>/<instance>`. Instances:
//!   - RPC binder: each `--socket PATH[#SERVICE]` (repeatable) or the `:`-separated
//!     VTS_DMABUF_LOADER_SOCKETS; SERVICE defaults to `vendor.dmabufloader.IDmabufLoader/default`
//!     and falls back to the session's root object;
//!   - otherwise kernel binder: the instances the service manager declares or lists
//!     (`--binder-device PATH` picks the driver node).
//!
//! Test files go to a scratch directory under `--tmpdir DIR`, VTS_DMABUF_LOADER_TMPDIR, or
//! /data/local/tmp (Android) / the system temp dir. All libtest options work (`--list`,
//! filters, `--exact`, `--skip`, `--test-threads`); tests run one at a time unless
//! `--test-threads` says otherwise, as gtest does (the fd-count case needs a quiet process).
//! Cases of a later interface version than an instance reports (the v2 `load_into.*` on a v1
//! instance) are reported ignored for it, after a "skipped: v1 instance" line.

// The v1 suite (package vts/v1, cfg(aidl_v1)) builds this file against its own library,
// the same sources compiled with the frozen v1 bindings.
#[cfg(aidl_v1)]
extern crate vts_hal_dmabuf_loader_v1 as vts_hal_dmabuf_loader;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use libtest_mimic::{Arguments, Failed, Trial};
use vts_hal_dmabuf_loader::binder::{self, Target, DESCRIPTOR};
use vts_hal_dmabuf_loader::{cases, default_tmp_parent, Env, Instance, TMPDIR_ENV};

const SOCKETS_ENV: &str = "VTS_DMABUF_LOADER_SOCKETS";

/// Our own options, taken out of argv before libtest parses the rest.
struct Own {
    sockets: Vec<String>,
    tmpdir: Option<PathBuf>,
    binder_device: Option<PathBuf>,
}

fn split_args() -> Result<(Own, Vec<String>)> {
    let mut own = Own {
        sockets: Vec::new(),
        tmpdir: None,
        binder_device: None,
    };
    let mut rest = Vec::new();
    let mut it = std::env::args();
    rest.extend(it.next());
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if !matches!(key.as_str(), "--socket" | "--tmpdir" | "--binder-device") {
            rest.push(a);
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().with_context(|| format!("{key} needs a value"))?,
        };
        match key.as_str() {
            "--socket" => own.sockets.push(value),
            "--tmpdir" => own.tmpdir = Some(value.into()),
            _ => own.binder_device = Some(value.into()),
        }
    }
    if own.sockets.is_empty() {
        if let Ok(v) = std::env::var(SOCKETS_ENV) {
            own.sockets
                .extend(v.split(':').filter(|s| !s.is_empty()).map(str::to_string));
        }
    }
    Ok((own, rest))
}

fn instances(own: &Own) -> Result<Vec<Instance>> {
    if !own.sockets.is_empty() {
        let parsed: Vec<(PathBuf, String)> = own
            .sockets
            .iter()
            .map(|s| match s.split_once('#') {
                Some((p, svc)) => (PathBuf::from(p), svc.to_string()),
                None => (PathBuf::from(s), format!("{DESCRIPTOR}/default")),
            })
            .collect();
        // Name an RPC instance by its socket's file name (tests read `<case>/<name>`), or by
        // the whole path when two sockets share a file name.
        let short: Vec<Option<String>> = parsed
            .iter()
            .map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let mut distinct: Vec<&String> = short.iter().flatten().collect();
        distinct.sort();
        distinct.dedup();
        let use_short = distinct.len() == parsed.len();
        return Ok(parsed
            .into_iter()
            .zip(short)
            .map(|((socket, service), name)| {
                let name = name
                    .filter(|_| use_short)
                    .unwrap_or_else(|| socket.display().to_string());
                Instance::new(name, Target::Rpc { socket, service })
            })
            .collect());
    }
    let names = binder::kernel_instances(own.binder_device.as_deref()).context(
        "no --socket given and kernel binder is unusable (give --socket PATH for RPC binder)",
    )?;
    if names.is_empty() {
        eprintln!(
            "note: the service manager declares no instance of {DESCRIPTOR}: nothing to test"
        );
    }
    Ok(names
        .into_iter()
        .map(|n| {
            let name = format!("{DESCRIPTOR}/{n}");
            let driver = own.binder_device.clone();
            Instance::new(n, Target::Kernel { name, driver })
        })
        .collect())
}

fn run() -> Result<ExitCode> {
    let (own, rest) = split_args()?;
    let mut args = Arguments::from_iter(rest);
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let insts: Vec<Arc<Instance>> = instances(&own)?.into_iter().map(Arc::new).collect();
    // Listing needs no scratch directory; a run does.
    let env = if args.list {
        None
    } else {
        let parent = own
            .tmpdir
            .clone()
            .or_else(|| std::env::var_os(TMPDIR_ENV).map(PathBuf::from))
            .unwrap_or_else(default_tmp_parent);
        Some(Arc::new(Env::new(&parent)?))
    };
    // A v1 instance has no loadInto: its v2 cases are ignored (as VTS skips), decided here
    // because a runner can only mark a trial ignored when it is made. Listing connects to
    // nothing; an instance that cannot be asked counts as current (its cases then fail with
    // the connection error).
    let versions: Vec<Option<i32>> = insts
        .iter()
        .map(|i| {
            (!args.list)
                .then(|| cases::instance_version(i).ok())
                .flatten()
        })
        .collect();
    let all = cases::all();
    for (inst, v) in insts.iter().zip(&versions) {
        if let Some(v) = v {
            let n = all
                .iter()
                .filter(|(case, _)| cases::min_version(case) > *v)
                .count();
            if n > 0 {
                println!(
                    "skipped: v1 instance (getInterfaceVersion = {v}): {n} cases of later versions are ignored on {}",
                    inst.name
                );
            }
        }
    }
    let mut trials = Vec::new();
    for (case, f) in all {
        for (inst, v) in insts.iter().zip(&versions) {
            let skip = v.is_some_and(|v| cases::min_version(&case) > v);
            let (f, inst, env) = (f.clone(), inst.clone(), env.clone());
            trials.push(
                Trial::test(format!("{case}/{}", inst.name), move || {
                    let env = env
                        .as_deref()
                        .ok_or_else(|| Failed::from("no scratch directory"))?;
                    f(&inst, env).map_err(|e| Failed::from(format!("{e:#}")))
                })
                .with_ignored_flag(skip),
            );
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        return Ok(ExitCode::from(101));
    }
    if insts.is_empty() && !args.list {
        eprintln!("note: 0 instances, 0 tests run");
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("VtsHalDmabufLoaderTargetTest: {e:#}");
            ExitCode::from(2)
        }
    }
}
