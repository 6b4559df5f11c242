//! The `herald` binary: parse the command line and hand off to the library. The global
//! allocator is jemalloc (feature `jemalloc`, on by default): measured against glibc's malloc
//! and mimalloc, it holds an idle stream in the least memory at the same CPU per delivery.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (`_RJEM_MALLOC_CONF` in the environment still
/// overrides them): a background thread returns freed pages to the kernel about a second
/// after they fell idle. Without it, the buffers of a burst of connections (thousands of
/// requests parsed at once when every stream of a node reconnects) stayed in the process
/// until later allocations happened to purge them: 0.5 KiB more per idle stream.
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 68] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000\0";

fn main() -> std::process::ExitCode {
    herald::main()
}
