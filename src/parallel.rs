//! Work split across cores, for large copies: rayon's pool in the process
//! that started it, plain scoped threads in a `fork()`ed child.
//!
//! A child of `fork()` has only the thread that called it: rayon's workers
//! stayed behind in the parent, and a job handed to the pool would wait for
//! them forever (Python's `multiprocessing` forks by default on Linux).

use std::sync::atomic::{AtomicU8, Ordering};

const UNCLAIMED: u8 = 0;
const OURS: u8 = 1;
const FORKED: u8 = 2;

/// Whether rayon's pool belongs to this process: unclaimed until the first
/// parallel job, ours from then on, and FORKED in every process forked
/// after that (set by a `pthread_atfork` child handler, registered when the
/// pool is claimed: a pid comparison would be fooled by pid reuse and pid
/// namespaces). A child forked before any claim starts its own pool.
static POOL: AtomicU8 = AtomicU8::new(UNCLAIMED);

extern "C" fn forked_child() {
    // Only an atomic store: allowed in a child of a multithreaded fork.
    POOL.store(FORKED, Ordering::Relaxed);
}

fn pool_is_ours() -> bool {
    match POOL.compare_exchange(UNCLAIMED, OURS, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            // SAFETY: registers a handler that only stores an atomic.
            if unsafe { libc::pthread_atfork(None, None, Some(forked_child)) } != 0 {
                // Could not register: never trust the pool after a fork, so
                // use plain threads in this process too.
                POOL.store(FORKED, Ordering::Relaxed);
                return false;
            }
            true
        }
        Err(state) => state == OURS,
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
