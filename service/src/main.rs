//! `dmabuf-loader-service`: serves vendor.dmabufloader.IDmabufLoader/default.
//!
//! Kernel binder by default (where /dev/binderfs/binder or /dev/binder exists), or RPC binder
//! on a unix socket with `--socket PATH`. Limits come from flags and/or `--config FILE` (TOML).
//! SIGTERM or SIGINT: refuse new loads, cancel running ones, close the socket, exit 0.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use dmabuf_loader_binder::{Transport, SERVICE_NAME};
use dmabuf_loader_service::config::{self, ConfigOverrides};
use dmabuf_loader_service::DmabufLoaderService;
use nix::sys::signal::{SigSet, Signal};

#[derive(Parser, Debug)]
#[command(
    name = "dmabuf-loader-service",
    version,
    about = "Loads files into dma-bufs for binder clients"
)]
struct Args {
    /// Serve RPC binder on this unix socket instead of kernel binder.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Kernel binder device (default: /dev/binderfs/binder, else /dev/binder).
    #[arg(long, value_name = "PATH", conflicts_with = "socket")]
    binder_device: Option<PathBuf>,
    /// TOML file with the limits below (flags win over it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    limits: ConfigOverrides,
}

fn main() {
    let args = Args::parse();
    init_logging();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("panic: {info}");
        default_hook(info);
    }));
    if let Err(e) = try_main(args) {
        log::error!("{e:#}");
        std::process::exit(1);
    }
}

fn try_main(args: Args) -> Result<()> {
    // Blocked before any thread exists, so every thread inherits the mask and only the
    // sigwait below sees SIGTERM/SIGINT.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("blocking SIGTERM/SIGINT")?;

    let config = config::load(args.limits, args.config.as_ref())?;
    let transport = Transport::choose(args.socket.as_deref(), args.binder_device.as_deref())?;
    let service = DmabufLoaderService::new(config.clone(), transport.describe())?;
    let shutdown = service.shutdown_handle();
    // Every load may be running and a few quick calls (getHeaps, cancel) still get a thread.
    let threads = config.max_concurrent_loads + 2;
    let server =
        dmabuf_loader_binder::serve(&transport, SERVICE_NAME, &service.into_binder(), threads)?;
    log::info!(
        "serving {SERVICE_NAME} on {} ({threads} threads)",
        transport.describe()
    );

    let signal = signals.wait().context("waiting for SIGTERM")?;
    log::info!("{signal:?} received: shutting down");
    if !shutdown.shutdown(Duration::from_secs(10)) {
        log::warn!("some loads did not stop within 10 s; exiting anyway");
    }
    server.stop();
    log::info!("stopped");
    Ok(())
}

#[cfg(target_os = "android")]
fn init_logging() {
    android_logger::init_once(
        android_logger::Config::default()
            .with_tag("dmabuf-loader")
            .with_max_level(log::LevelFilter::Info),
    );
}

#[cfg(not(target_os = "android"))]
fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
}
