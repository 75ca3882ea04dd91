//! A persistent thread pool tuned for many short parallel regions.
//!
//! A decode step runs a few hundred kernels of tens of microseconds each, so
//! dispatch latency matters more than throughput of long jobs: workers spin
//! on an epoch counter for a short while before parking, and the calling
//! thread takes tasks too. Tasks are claimed from an atomic counter; a task's
//! output depends only on its index, never on which thread ran it, so results
//! do not depend on scheduling. (rayon's fork-join costs several
//! microseconds per region with two threads, which is why this exists.)

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Job = *const (dyn Fn(usize) + Sync);

#[derive(Clone, Copy)]
struct Run {
    id: u64,
    job: Job,
    tasks: u64,
}
// SAFETY: the job pointer is only dereferenced while `run` keeps the closure alive
// (claims are tagged with the run id, so a late worker cannot touch another run).
unsafe impl Send for Run {}

struct Shared {
    /// Bumped for every run; workers wake on a change.
    epoch: AtomicUsize,
    /// `run id << 32 | next task index`: claims of a stale run fail.
    next: AtomicU64,
    done: AtomicUsize,
    run: Mutex<Option<Run>>,
    stop: AtomicBool,
    sleepers: Mutex<Vec<std::thread::Thread>>,
}

/// Spin iterations before a worker parks.
const SPIN: usize = 20_000;

/// The pool. Dropping it stops the workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    run_lock: Mutex<u64>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads)
            .finish()
    }
}

fn work(shared: &Shared, run: Run) {
    loop {
        let cur = shared.next.load(Ordering::Acquire);
        if cur >> 32 != run.id & 0xffff_ffff || (cur & 0xffff_ffff) >= run.tasks {
            return;
        }
        if shared
            .next
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue;
        }
        // SAFETY: `run` keeps the closure alive until every claimed task is done.
        unsafe { (*run.job)((cur & 0xffff_ffff) as usize) };
        shared.done.fetch_add(1, Ordering::AcqRel);
    }
}

fn worker(shared: Arc<Shared>) {
    let mut seen = shared.epoch.load(Ordering::Acquire);
    loop {
        let mut spins = 0;
        loop {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let e = shared.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
            } else {
                if let Ok(mut s) = shared.sleepers.lock() {
                    s.push(std::thread::current());
                }
                // Re-check after registering to avoid a lost wake-up.
                if shared.epoch.load(Ordering::Acquire) == seen
                    && !shared.stop.load(Ordering::Acquire)
                {
                    std::thread::park_timeout(std::time::Duration::from_millis(50));
                }
                spins = 0;
            }
        }
        let run = shared.run.lock().ok().and_then(|r| *r);
        if let Some(run) = run {
            work(&shared, run);
        }
    }
}

impl ThreadPool {
    /// A pool of `threads` threads in total (the caller counts as one).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            next: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            run: Mutex::new(None),
            stop: AtomicBool::new(false),
            sleepers: Mutex::new(Vec::new()),
        });
        let workers = (1..threads)
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("kiln-cpu-{i}"))
                    .spawn(move || worker(s))
                    .expect("spawn a kernel worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            threads,
            run_lock: Mutex::new(0),
        }
    }

    /// Threads in the pool (including the caller).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f(0..tasks)` across the pool and return when all are done.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if self.threads == 1 || tasks == 1 {
            (0..tasks).for_each(f);
            return;
        }
        let mut counter = self.run_lock.lock().unwrap_or_else(|p| p.into_inner());
        *counter += 1;
        let id = *counter & 0xffff_ffff;
        let s = &self.shared;
        // SAFETY: the lifetime is erased only until this function returns,
        // after every claimed task finished (see the wait below).
        let job: Job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f) };
        let run = Run {
            id,
            job,
            tasks: tasks as u64,
        };
        {
            let mut slot = s.run.lock().unwrap_or_else(|p| p.into_inner());
            s.done.store(0, Ordering::Release);
            s.next.store(id << 32, Ordering::Release);
            *slot = Some(run);
        }
        s.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut sleepers) = s.sleepers.lock() {
            for t in sleepers.drain(..) {
                t.unpark();
            }
        }
        work(s, run);
        while s.done.load(Ordering::Acquire) < tasks {
            std::hint::spin_loop();
        }
        // Close the run: no claim can succeed any more.
        s.next.store((id << 32) | 0xffff_ffff, Ordering::Release);
        if let Ok(mut slot) = s.run.lock() {
            *slot = None;
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Ok(mut sleepers) = self.shared.sleepers.lock() {
            for t in sleepers.drain(..) {
                t.unpark();
            }
        }
        for w in self.workers.drain(..) {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

/// Split `0..len` into `parts` contiguous ranges; range `i`.
pub fn chunk(len: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    let per = len.div_ceil(parts.max(1));
    let start = (i * per).min(len);
    start..(start + per).min(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_once() {
        let pool = ThreadPool::new(3);
        for tasks in [1, 2, 7, 100, 1000] {
            let hits: Vec<AtomicU64> = (0..tasks).map(|_| AtomicU64::new(0)).collect();
            pool.run(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn survives_idle_periods() {
        let pool = ThreadPool::new(2);
        let sum = AtomicU64::new(0);
        for round in 0..3 {
            if round > 0 {
                std::thread::sleep(std::time::Duration::from_millis(120));
            }
            pool.run(64, &|i| {
                sum.fetch_add(i as u64, Ordering::Relaxed);
            });
        }
        assert_eq!(sum.load(Ordering::Relaxed), 3 * (63 * 64 / 2));
    }

    #[test]
    fn chunks_cover_the_range() {
        let mut covered = [0; 10];
        for i in 0..4 {
            for j in chunk(10, 4, i) {
                covered[j] += 1;
            }
        }
        assert!(covered.iter().all(|&c| c == 1));
    }
}
