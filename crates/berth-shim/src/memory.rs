//! What a shim gives back once its container runs.
//!
//! A host runs one shim per container, for as long as the container lives,
//! so a shim's resident size is multiplied by the number of containers.
//! Starting a container uses far more of the shim than supervising it:
//! parsing the spec, the runtime's whole setup (cgroups, seccomp, mounts),
//! serde. Afterwards only the poll loop runs. Once, when the container is
//! running, the shim releases two things that only starting needed:
//!
//! - **Free heap pages** (`malloc_trim(0)`). glibc gives memory back on its
//!   own only from the top of the heap and only past 128 KiB; what startup
//!   freed below live allocations would otherwise stay resident for good.
//!   (glibc only: musl, which `scripts/build.sh` builds the shim against
//!   when it can, unmaps freed memory by itself and has no `malloc_trim`.)
//!
//! - **Its mappings of the program's read-only segments** (code, rodata),
//!   with `MADV_DONTNEED`. These are clean page-cache pages of the binary
//!   file, shared with every other shim. Most of them are mapped only
//!   because the kernel maps up to 64 KiB around every page fault on a
//!   file ("fault-around"), so startup maps nearly all of the ~1.1 MB of
//!   code. Unmapping them frees nothing system-wide and costs no I/O: the
//!   pages stay in the page cache, and those the shim runs again (the poll
//!   loop, later the teardown) come back on a minor fault. The kernel may
//!   drop clean file pages of any process at any time under memory
//!   pressure; this does early, for this process only, what reclaim could
//!   do anyway. Not `MADV_PAGEOUT`: it evicts the pages from the page cache
//!   (the next shim would read the binary from disk) and skips those other
//!   shims map. Not `MADV_COLD`: it only ages pages, they stay resident.
//!
//! `MADV_DONTNEED` on a private file mapping also throws away any private
//! copy of a page, so it is applied only to what is never written: loadable
//! segments without write permission, none that overlaps `PT_GNU_RELRO`
//! (written by relocation, then made read-only), and nothing at all in a
//! program with text relocations. (A debugger's software breakpoints in
//! those pages would be lost too; they are written through ptrace.)

use std::ffi::{c_int, c_void};

/// `DT_TEXTREL`, `DT_FLAGS` and its `DF_TEXTREL` bit (ELF gABI), which the
/// libc crate does not define.
const DT_NULL: isize = 0;
const DT_TEXTREL: isize = 22;
const DT_FLAGS: isize = 30;
const DF_TEXTREL: usize = 0x4;

/// A program header, as dl_iterate_phdr hands them out on this target.
#[cfg(target_pointer_width = "64")]
type Phdr = libc::Elf64_Phdr;
#[cfg(target_pointer_width = "32")]
type Phdr = libc::Elf32_Phdr;

/// An entry of the dynamic section: `Elf32_Dyn` or `Elf64_Dyn`, whose two
/// fields are each the size of a pointer.
#[repr(C)]
struct Dyn {
    tag: isize,
    val: usize,
}

/// Releases what only starting the container needed (see the module
/// docs). Best effort: failing to release memory changes nothing else, so
/// errors are ignored.
pub(crate) fn release_startup_memory() {
    // SAFETY: malloc_trim only hands free heap pages back to the kernel.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
    let image = ReadOnlyImage::of_this_program();
    for &(start, end) in image.ranges() {
        // SAFETY: [start, end) is whole pages of segments of this program
        // that are mapped from its file and never written (see
        // ReadOnlyImage::collect), so dropping the pages loses nothing:
        // any later access refills them from the same file.
        unsafe {
            libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Page ranges `[start, end)` of the program's never-written segments; a
/// fixed array, so that finding them allocates nothing after the trim.
#[derive(Default)]
struct ReadOnlyImage {
    ranges: [(usize, usize); 8],
    len: usize,
}

impl ReadOnlyImage {
    fn of_this_program() -> ReadOnlyImage {
        let mut image = ReadOnlyImage::default();
        // SAFETY: the callback only reads what dl_iterate_phdr hands it and
        // writes to `image`, which outlives the call.
        unsafe {
            libc::dl_iterate_phdr(
                Some(first_object),
                (&mut image as *mut ReadOnlyImage).cast::<c_void>(),
            );
        }
        image
    }

    fn ranges(&self) -> &[(usize, usize)] {
        &self.ranges[..self.len]
    }

    /// # Safety
    ///
    /// `phdrs` are the program headers of an object loaded at `base`.
    unsafe fn collect(&mut self, base: usize, phdrs: &[Phdr]) {
        // SAFETY: sysconf has no preconditions.
        let page = match usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) {
            Ok(p) if p.is_power_of_two() => p,
            _ => return,
        };
        let down = |a: usize| a & !(page - 1);
        let up = |a: usize| a.saturating_add(page - 1) & !(page - 1);
        // SAFETY: forwarded from the caller.
        if phdrs
            .iter()
            .any(|p| p.p_type == libc::PT_DYNAMIC && unsafe { has_text_relocations(base, p) })
        {
            return;
        }
        let relro = |start: usize, end: usize| {
            phdrs.iter().any(|p| {
                let (s, e) = span(base, p, p.p_memsz as usize);
                p.p_type == libc::PT_GNU_RELRO && down(s) < end && start < up(e)
            })
        };
        for p in phdrs {
            if p.p_type != libc::PT_LOAD || p.p_flags & libc::PF_W != 0 {
                continue;
            }
            // Whole pages inside the segment's file bytes only: a page at
            // either edge may be shared with a neighbouring segment (which
            // may be writable), and bytes past p_filesz are anonymous.
            let (s, e) = span(base, p, p.p_filesz as usize);
            let (start, end) = (up(s), down(e));
            if start >= end || relro(start, end) || self.len == self.ranges.len() {
                continue;
            }
            self.ranges[self.len] = (start, end);
            self.len += 1;
        }
    }
}

/// Where `size` bytes from the start of segment `p` lie in memory.
fn span(base: usize, p: &Phdr, size: usize) -> (usize, usize) {
    let start = base.wrapping_add(p.p_vaddr as usize);
    (start, start.saturating_add(size))
}

/// # Safety
///
/// `dynamic` is the `PT_DYNAMIC` header of an object loaded at `base`.
unsafe fn has_text_relocations(base: usize, dynamic: &Phdr) -> bool {
    let mut entry = base.wrapping_add(dynamic.p_vaddr as usize) as *const Dyn;
    let count = dynamic.p_memsz as usize / std::mem::size_of::<Dyn>();
    for _ in 0..count {
        // SAFETY: the loader mapped the dynamic section, `count` entries
        // long, at this address; DT_NULL ends it sooner.
        let Dyn { tag, val } = unsafe { entry.read() };
        match tag {
            DT_NULL => break,
            DT_TEXTREL => return true,
            DT_FLAGS if val & DF_TEXTREL != 0 => return true,
            _ => {}
        }
        // SAFETY: still within the `count` entries.
        entry = unsafe { entry.add(1) };
    }
    false
}

/// dl_iterate_phdr's callback: the first object it reports is the program
/// itself, so it collects that one and stops.
unsafe extern "C" fn first_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid `info` for the duration of the
    // call, whose headers are `dlpi_phnum` long, and `data` is the
    // ReadOnlyImage that of_this_program passed.
    unsafe {
        let info = &*info;
        let image = &mut *data.cast::<ReadOnlyImage>();
        if !info.dlpi_phdr.is_null() {
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            image.collect(info.dlpi_addr as usize, phdrs);
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The function that finds the ranges must itself be in one of them:
    /// this test binary's code is never written, so it qualifies.
    #[test]
    fn finds_the_programs_code_and_nothing_writable() {
        let image = ReadOnlyImage::of_this_program();
        assert!(image.len > 0, "no read-only segment found");
        let here = ReadOnlyImage::of_this_program as fn() -> ReadOnlyImage as usize;
        // Ranges are trimmed inward to whole pages, so the function may sit
        // in the partial page at the edge of its segment.
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        assert!(
            image
                .ranges()
                .iter()
                .any(|&(s, e)| s.saturating_sub(page) <= here && here < e + page),
            "code at {here:#x} not in {:x?}",
            image.ranges()
        );
        // A writable static lives outside every range.
        static WRITABLE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
        let data = std::ptr::addr_of!(WRITABLE) as usize;
        assert!(image.ranges().iter().all(|&(s, e)| data < s || e <= data));
        // And releasing them is harmless: the code still runs afterwards.
        release_startup_memory();
        assert_eq!(ReadOnlyImage::of_this_program().ranges(), image.ranges());
    }
}
