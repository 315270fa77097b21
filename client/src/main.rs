//! `dmabuf-loader`: load files into dma-bufs through dmabuf-loader-service.
fn main() {
    std::process::exit(dmabuf_loader_client::cli::main());
}
