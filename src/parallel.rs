//! Work split across cores, for large copies: rayon's pool in the process
//! that started it, plain scoped threads in a `fork()`ed child.
//!
//! A child of `fork()` has only the thread that called it: rayon's workers
//! stayed behind in the parent, and a job handed to the pool would wait for
//! them forever (Python's `multiprocessing` forks by default on Linux).

use std::sync::atomic::{AtomicU32, Ordering};

/// The process whose rayon pool we use (0 until the first parallel job).
static POOL_PID: AtomicU32 = AtomicU32::new(0);

/// Whether rayon's pool belongs to this process: the first process to use
/// it claims it; a forked child sees its parent's claim and must not.
fn pool_is_ours() -> bool {
    let pid = std::process::id();
    match POOL_PID.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => true,
        Err(owner) => owner == pid,
    }
}

/// How many parts are worth making: the pool's size, or the cores.
pub(crate) fn threads() -> usize {
    if pool_is_ours() {
        rayon::current_num_threads()
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// Runs `f(0)`, ..., `f(parts - 1)`, in parallel where it can, and returns
/// when all are done.
pub(crate) fn for_each(parts: usize, f: impl Fn(usize) + Sync) {
    if parts <= 1 {
        (0..parts).for_each(f);
        return;
    }
    if pool_is_ours() {
        use rayon::prelude::*;
        (0..parts).into_par_iter().for_each(&f);
        return;
    }
    // A forked child: each thread takes every `workers`-th part; a thread
    // that cannot be started leaves its parts to the calling thread.
    let workers = threads().min(parts);
    let f = &f;
    let run = move |first: usize| (first..parts).step_by(workers).for_each(f);
    std::thread::scope(|scope| {
        let started: Vec<bool> =
            (1..workers).map(|k| std::thread::Builder::new().spawn_scoped(scope, move || run(k)).is_ok()).collect();
        run(0);
        for (k, ok) in started.into_iter().enumerate() {
            if !ok {
                run(k + 1);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_part_runs_once() {
        for parts in [0, 1, 2, 7, 100] {
            let seen: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            for_each(parts, |p| {
                seen[p].fetch_add(1, Ordering::Relaxed);
            });
            assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1), "{parts} parts");
        }
    }
}
