//! Each async worker on a CPU of its own; every other thread anywhere.
//!
//! Measured on a 2-core host under CSR signing at c32 (BENCHMARKS.md, "CSR
//! signing against cfssl, round 3"): left to the scheduler, the two workers
//! kept landing on the same CPU — each wakes the other, and the kernel puts a
//! woken thread next to its waker — so they spent ~40% of their time runnable
//! but waiting while the machine sat ~20% idle. One worker per CPU took that
//! idle time back (+7–14% in A/B sets). SQLite's connection threads must stay free:
//! pinned beside a worker, they gave the gain back, because the group commit
//! they run is the one serial stage.
//!
//! Linux only, and off with `CA_WORKER_AFFINITY=off`, or by itself when the
//! process may use a single CPU or has fewer workers than CPUs in its set
//! (a CPU quota, see [`plan`]). Threads inherit their creator's CPU set, so
//! a thread started by a pinned worker (the blocking pool, SQLite's
//! connection threads) is released again: the blocking pool's at its start,
//! SQLite's after each connection is opened ([`release_threads_named`]).

// The second unsafe module of the binary (with `allocator`): the glibc calls
// that read and set a thread's CPU set.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The CPUs the process may use, once placement is on.
static CPUS: OnceLock<Vec<usize>> = OnceLock::new();
/// The next CPU (an index into [`CPUS`]) a worker takes.
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static PLACED: Cell<bool> = const { Cell::new(false) };
}

/// Turns placement on unless `setting` (`CA_WORKER_AFFINITY`) is `off`, for
/// `workers` workers; returns the CPUs workers will take, or why not.
pub fn enable(setting: Option<&str>, workers: usize) -> Result<Vec<usize>, String> {
    if matches!(setting, Some("off" | "0" | "false" | "no")) {
        return Err("CA_WORKER_AFFINITY=off".into());
    }
    let cpus = allowed_cpus().ok_or("the CPU set could not be read")?;
    let taken = plan(&cpus, workers)?;
    CPUS.set(cpus)
        .map_err(|_| "placement was already on".to_string())?;
    Ok(taken)
}

/// The CPUs `workers` workers take from the process's CPU set `cpus`, one
/// each, or why they should not be pinned.
///
/// Only when there is a worker for every CPU in the set. Fewer workers than
/// CPUs means a CPU quota below the set (a container's `cpu.max`, which
/// `available_parallelism` reports): the process then shares those CPUs
/// with others, and tying its workers to the first few would put them where
/// everyone else's threads start too.
fn plan(cpus: &[usize], workers: usize) -> Result<Vec<usize>, String> {
    if cpus.len() < 2 {
        return Err("the process may use one CPU".into());
    }
    if workers != cpus.len() {
        return Err(format!(
            "{workers} workers for a set of {} CPUs (a CPU quota below the set): the scheduler places them",
            cpus.len()
        ));
    }
    Ok(cpus.to_vec())
}

/// For the runtime's `on_thread_park`, which only workers call: at a
/// worker's first park, pins it to the next free CPU.
pub fn place_worker() {
    PLACED.with(|placed| {
        if placed.replace(true) {
            return;
        }
        if let Some(cpus) = CPUS.get() {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            if let Some(&cpu) = cpus.get(n) {
                set_cpus(0, &[cpu]);
            }
        }
    });
}

/// For the runtime's `on_thread_start`: a new thread may run on any CPU,
/// whichever worker started it.
pub fn release_current() {
    if let Some(cpus) = CPUS.get() {
        set_cpus(0, cpus);
    }
}

/// Frees the threads whose name starts with `prefix` (SQLite's connection
/// threads, `sqlx-sqlite-worker-N`) to run on any CPU.
pub fn release_threads_named(prefix: &str) {
    let Some(cpus) = CPUS.get() else {
        return;
    };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.starts_with(prefix) {
            set_cpus(tid, cpus);
        }
    }
}

/// The CPUs the calling thread may use.
fn allowed_cpus() -> Option<Vec<usize>> {
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    return None;
    // SAFETY: `set` is a zeroed cpu_set_t we own, its size is passed, and
    // CPU_ISSET reads inside it for indices below CPU_SETSIZE.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect(),
        )
    }
}

/// Sets thread `tid`'s CPU set (0: the calling thread); failures are ignored
/// (placement is an optimisation, never a condition).
fn set_cpus(tid: i32, cpus: &[usize]) {
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (tid, cpus);
    // SAFETY: as above; CPU_SET writes inside `set` for indices the kernel
    // reported, which are below CPU_SETSIZE.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn a_worker_for_every_cpu_of_the_set_is_pinned_one_to_each() {
        assert_eq!(plan(&[0, 1], 2), Ok(vec![0, 1]));
        assert_eq!(plan(&[2, 5, 7], 3), Ok(vec![2, 5, 7]));
    }

    #[test]
    fn one_cpu_or_a_quota_below_the_set_leaves_placement_to_the_scheduler() {
        assert!(plan(&[3], 1).unwrap_err().contains("one CPU"));
        let quota = plan(&(0..16).collect::<Vec<_>>(), 2).unwrap_err();
        assert!(quota.contains("2 workers for a set of 16 CPUs"), "{quota}");
    }
}
