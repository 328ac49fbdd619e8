//! What a shim gives back once its container runs.
//!
//! A host runs one shim per container, for as long as the container lives,
//! so a shim's own (anonymous) memory is multiplied by the number of
//! containers. Starting a container allocates far more than supervising it
//! (the spec, the runtime's setup, serde); once it runs, the shim hands the
//! heap pages that start-up freed back to the kernel with `malloc_trim(0)`:
//! glibc gives memory back on its own only from the top of the heap and only
//! past 128 KiB, so what start-up freed below live allocations would
//! otherwise stay resident for good. musl, which `scripts/build.sh` builds
//! the shim against when it can, unmaps freed memory by itself and has no
//! `malloc_trim`.
//!
//! The shim's code pages are not touched: they are page cache shared by
//! every shim, counted once in the sum of the shims' PSS; unmapping them
//! from each shim (an earlier build did, with `MADV_DONTNEED`) only lowered
//! each shim's RSS, not what the shims cost together (docs/performance.md,
//! "Startup tricks: what each is worth").

/// Releases the heap pages only starting the container needed.
pub(crate) fn release_startup_memory() {
    // SAFETY: malloc_trim only hands free heap pages back to the kernel.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}
