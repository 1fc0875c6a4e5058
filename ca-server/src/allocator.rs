//! glibc's malloc, tuned for a long-running server.
//!
//! Measured in the soak (RELIABILITY.md §5): the live heap stayed flat at a
//! few MiB while RSS kept growing, because glibc gives each thread that
//! allocates its own arena (up to 8 per core) and keeps the freed pages of
//! every arena mapped. Two arenas are enough for the tokio workers, and
//! trimming every few seconds hands freed pages back to the kernel.
//!
//! Other C libraries (musl) and other systems: nothing to do.

// The only unsafe code of the binary: two calls into the C library.
#![allow(unsafe_code)]

use std::time::Duration;

/// Arenas malloc may create (glibc's default is 8 per core).
const ARENA_MAX: i32 = 2;
/// How often freed memory is returned to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Limits the arenas. Call first thing in `main`, before any thread exists
/// (arenas are created as threads first allocate). `MALLOC_ARENA_MAX` in
/// the environment, if set, wins: glibc has read it already.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tuning parameter of glibc's allocator;
        // it takes plain integers and is called before other threads exist.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) };
        if ok == 0 {
            eprintln!("warning: mallopt(M_ARENA_MAX) refused; malloc keeps its default arenas");
        }
    }
}

/// Starts a thread that returns freed heap pages to the kernel every
/// [`TRIM_EVERY`]. It sleeps in between, holds nothing and ends with the
/// process.
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_EVERY);
                // SAFETY: malloc_trim takes the allocator's own locks and
                // only releases pages that hold no live allocation; it is
                // safe to call from any thread at any time.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the malloc trimmer; freed memory stays mapped");
        }
    }
}
