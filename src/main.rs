//! `studio`: the command line of studio-ledger. All wiring lives in the library's `cli`.

/// mimalloc instead of glibc's malloc: profiling the ingest benchmark (`perf record`) found about
/// a quarter of all CPU time in glibc's `malloc`/`free` and their consolidation. The server
/// allocates and frees many small strings and maps per event (JSON parsing, validation, the
/// answer), across threads. See BENCHMARKS.md for the before and after.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    studio::cli::main().await
}
