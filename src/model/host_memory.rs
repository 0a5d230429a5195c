//! How the process's heap treats the CPU backend's large, short-lived buffers.
//!
//! A forward or training pass on the CPU backend allocates and frees buffers of tens of MB
//! hundreds of times (every activation, gradient and temporary of Hiera-B+ at 512² is 4–60
//! MB). glibc's malloc serves each one above 32 MiB (and, by default, above a threshold that
//! grows only up to that) with a fresh `mmap` and returns it with `munmap` on free, and trims
//! the heap top back to the kernel once 128 KiB of it is free. Every new buffer is then
//! faulted in a page at a time and zeroed by the kernel: perf counted page faults at 22 % of a
//! B+ training step (14 % in the kernel's page clearing alone, 2026-12-05), and 5.0 M faults
//! in a `bench model --train-slices 0` run.
//!
//! [`keep_freed_memory`] makes glibc serve every block from its heap and keep what is freed
//! there for the next pass instead (`M_MMAP_MAX = 0`, `M_TRIM_THRESHOLD = -1`), and makes
//! every thread use that one heap (`M_ARENA_MAX = 1`): a thread's own arena is made of 64 MiB
//! mappings, and glibc 2.36 maps a larger block for a thread afresh every time whatever
//! `M_MMAP_MAX` says, which would leave the app's inference and training threads (and
//! 8-slice training batches) out. The blocks are few and large, so one arena's lock costs
//! nothing measurable (`bench model`, same binary, 2026-12-05). Measured on
//! the 2-core EPYC (2026-12-05, `sam4em bench model`, interleaved, the same binary with and
//! without the equivalent `GLIBC_TUNABLES`): 350 k page faults instead of 5.0 M, full stream
//! step 2.96 → 2.49 s, training step of 2 slices 24.5 → 18.6 s, the same peak RSS (8.5 GiB
//! training, 1.33 → 1.40 GiB inference). The cost is that freed memory stays with the process:
//! [`release_freed_memory`] hands it back to the kernel, and the workers call it when a job
//! ends so that an idle app holds only what it uses.
//!
//! Other C libraries (musl, macOS, Windows) keep their own behaviour: both functions do
//! nothing there.

/// Keeps freed heap memory in the process for reuse (see the module docs). Call it once, at
/// startup, before the first large allocation; returns whether the allocator took the setting.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes glibc's allocation parameters; it is safe to call
        // at any time from any thread (glibc takes its own lock).
        #[allow(unsafe_code)]
        unsafe {
            let no_mmap = libc::mallopt(libc::M_MMAP_MAX, 0) == 1;
            // -1 disables trimming the heap top on free (mallopt(3)).
            let no_trim = libc::mallopt(libc::M_TRIM_THRESHOLD, -1) == 1;
            let one_arena = libc::mallopt(libc::M_ARENA_MAX, 1) == 1;
            no_mmap && no_trim && one_arena
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Returns the heap's free memory to the kernel (glibc's `malloc_trim`): whole free pages
/// anywhere in the heap, not only at its top. Cheap next to a job (a few ms for GBs); a no-op
/// where [`keep_freed_memory`] does nothing.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` walks glibc's own free lists under its lock and releases
        // pages no live allocation uses; it does not touch allocated memory.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings and the measurements are process-wide, and other tests allocate on other
    /// threads of this process: the check runs alone in a child process of this test binary.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_blocks_are_reused_then_released() {
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args(["model::host_memory::tests::reuse_then_release_alone", "--exact", "--ignored", "--nocapture"])
            .output()
            .expect("run the test binary");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("1 passed"), "child run failed:\n{text}");
    }

    /// With the setting on, a large block freed and allocated again is served from the heap
    /// with its pages already present, and trimming afterwards gives it back to the kernel.
    /// (The arena setting cannot be shown here: glibc fixes its arena limit once threads
    /// exist, and the harness's already do.)
    /// Run by [`freed_blocks_are_reused_then_released`] in a process of its own.
    #[test]
    #[ignore = "run alone in a child process by freed_blocks_are_reused_then_released"]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn reuse_then_release_alone() {
        fn resident_bytes() -> usize {
            let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
            let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("resident pages");
            pages * 4096
        }
        fn minor_faults() -> u64 {
            let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
            // minflt is field 10; fields are counted after the command name's parenthesis.
            let after = &stat[stat.rfind(')').expect("comm") + 2..];
            after.split_whitespace().nth(7).and_then(|f| f.parse().ok()).expect("minflt")
        }
        // Above glibc's largest mmap threshold (32 MiB), below a thread arena's heap (64 MiB).
        const BYTES: usize = 40 << 20;
        let touch = |v: &mut Vec<u8>| v.iter_mut().step_by(4096).for_each(|b| *b = 1);
        // Without the setting, the block is a fresh mapping every time.
        let faults = minor_faults();
        let mut block = vec![0u8; BYTES];
        touch(&mut block);
        drop(block);
        let default_faults = minor_faults() - faults;
        assert!(default_faults >= (BYTES / 4096 / 2) as u64, "{default_faults} page faults for a fresh block");
        assert!(keep_freed_memory(), "glibc takes the settings");
        let mut first = vec![0u8; BYTES];
        touch(&mut first);
        drop(first);
        let faults = minor_faults();
        let mut again = vec![0u8; BYTES];
        touch(&mut again);
        let refaulted = minor_faults() - faults;
        assert!(refaulted < (BYTES / 4096 / 8) as u64, "{refaulted} page faults on reuse");
        drop(again);
        let before = resident_bytes();
        release_freed_memory();
        let released = before.saturating_sub(resident_bytes());
        assert!(released >= BYTES / 2, "trimming returned {} MiB", released >> 20);
    }
}
