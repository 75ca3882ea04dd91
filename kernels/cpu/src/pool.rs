//! A persistent thread pool tuned for many short parallel regions.
//!
//! A decode step runs a few hundred kernels of a few to tens of microseconds
//! each, so dispatch latency matters more than throughput of long jobs:
//! - the calling thread publishes a job with one epoch bump and takes tasks
//!   itself; idle workers notice the bump within a few hundred nanoseconds;
//! - idle workers spin (`pause`) for 50 µs, then keep checking between
//!   `sched_yield`s (cheap when the core is otherwise idle, and it lets other
//!   threads run when the machine is oversubscribed) until 4 ms have passed,
//!   and only then park;
//! - tasks are claimed from an atomic counter tagged with the run's id, so a
//!   late worker can never run a task of a finished run.
//!
//! A task's output depends only on its index, never on which thread ran it,
//! so results do not depend on scheduling.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = *const (dyn Fn(usize) + Sync);

#[derive(Clone, Copy)]
struct Run {
    id: u64,
    job: Job,
    tasks: u64,
}

// SAFETY: the job pointer is only dereferenced after a successful claim of
// this run's task, while `ThreadPool::run` keeps the closure alive.
unsafe impl Send for Run {}

struct Shared {
    /// Bumped for every run; workers wake on a change.
    epoch: AtomicUsize,
    /// `run id << 32 | next task index`: claims of a stale run fail.
    next: AtomicU64,
    /// Tasks finished in the current run.
    done: AtomicUsize,
    run: Mutex<Option<Run>>,
    stop: AtomicBool,
    sleepers: Mutex<Vec<std::thread::Thread>>,
    /// How long an idle worker stays awake (spinning, then yielding).
    awake: Duration,
    /// The first panic of a task in the current run, re-raised by the caller.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// Spin iterations between clock reads while idle.
const CLOCK_EVERY: usize = 64;
/// Time an idle worker spins before it starts yielding its core between checks
/// (on a busy machine a spinning worker would otherwise take turns with the
/// thread it is waiting for).
const SPIN_TIME: Duration = Duration::from_micros(50);
/// Default time an idle worker stays awake (spinning, then yielding) before parking.
pub const DEFAULT_AWAKE: Duration = Duration::from_millis(4);

/// The pool. Dropping it stops and joins the workers.
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

/// Claim and run tasks of `run` until none is left.
fn work(shared: &Shared, run: Run) {
    loop {
        let cur = shared.next.load(Ordering::Acquire);
        if cur >> 32 != run.id || (cur & 0xffff_ffff) >= run.tasks {
            return;
        }
        if shared
            .next
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue;
        }
        // SAFETY: the claim succeeded, so `run` is live and keeps the closure
        // alive until `done` reaches `tasks`. A panicking task still counts as
        // done (so the caller never waits forever or returns early while other
        // tasks use the closure); the caller re-raises the panic.
        let task =
            std::panic::AssertUnwindSafe(|| unsafe { (*run.job)((cur & 0xffff_ffff) as usize) });
        if let Err(p) = std::panic::catch_unwind(task)
            && let Ok(mut slot) = shared.panic.lock()
        {
            slot.get_or_insert(p);
        }
        shared.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// Wait for the epoch to move past `seen`; false when the pool stops.
/// Spins for [`SPIN_TIME`], then yields the core between checks until
/// `awake`, then parks.
fn wait_for_work(shared: &Shared, seen: &mut usize) -> bool {
    let mut started = Instant::now();
    let mut spins = 0usize;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return false;
        }
        let e = shared.epoch.load(Ordering::Acquire);
        if e != *seen {
            *seen = e;
            return true;
        }
        spins += 1;
        if !spins.is_multiple_of(CLOCK_EVERY) {
            std::hint::spin_loop();
            continue;
        }
        let idle = started.elapsed();
        if idle < SPIN_TIME {
            std::hint::spin_loop();
        } else if idle < shared.awake {
            std::thread::yield_now();
        } else {
            if let Ok(mut s) = shared.sleepers.lock() {
                s.push(std::thread::current());
            }
            // Re-check after registering so a wake-up between the check and the park is not lost.
            if shared.epoch.load(Ordering::Acquire) == *seen && !shared.stop.load(Ordering::Acquire)
            {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            started = Instant::now();
        }
    }
}

fn worker(shared: Arc<Shared>) {
    let mut seen = shared.epoch.load(Ordering::Acquire);
    while wait_for_work(&shared, &mut seen) {
        let run = shared.run.lock().ok().and_then(|r| *r);
        if let Some(run) = run {
            work(&shared, run);
        }
    }
}

impl ThreadPool {
    /// A pool of `threads` threads in total (the calling thread counts as one).
    pub fn new(threads: usize) -> ThreadPool {
        ThreadPool::with_awake_time(threads, DEFAULT_AWAKE)
    }

    /// A pool with one thread per physical core available ([`physical_cores`]).
    pub fn with_default_threads() -> ThreadPool {
        ThreadPool::new(physical_cores())
    }

    /// A pool whose idle workers stay awake for `awake` before parking
    /// (longer: lower latency after pauses, more CPU burnt while idle).
    pub fn with_awake_time(threads: usize, awake: Duration) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            next: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            run: Mutex::new(None),
            stop: AtomicBool::new(false),
            sleepers: Mutex::new(Vec::new()),
            awake,
            panic: Mutex::new(None),
        });
        let mut workers = Vec::new();
        for i in 1..threads {
            let s = shared.clone();
            match std::thread::Builder::new()
                .name(format!("kiln-cpu-{i}"))
                .spawn(move || worker(s))
            {
                Ok(h) => workers.push(h),
                // Fewer threads than asked is slower, never wrong.
                Err(_) => break,
            }
        }
        let threads = workers.len() + 1;
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

    /// Run `f(i)` for `i` in `0..tasks` across the pool; returns when all are done.
    /// Concurrent calls from several threads are serialized. If a task
    /// panics, the others still run and the panic is re-raised here.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if self.threads == 1 || tasks == 1 {
            (0..tasks).for_each(f);
            return;
        }
        assert!(tasks < (1 << 32), "thread pool: too many tasks");
        let mut counter = self.run_lock.lock().unwrap_or_else(|p| p.into_inner());
        *counter = (*counter + 1) & 0xffff_ffff;
        let id = *counter;
        let s = &self.shared;
        // SAFETY: the lifetime is erased only until this function returns,
        // after every claimed task finished (see the wait below); late
        // workers fail their claims and never dereference the pointer.
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
        let panic = s.panic.lock().ok().and_then(|mut p| p.take());
        if let Some(p) = panic {
            drop(counter);
            std::panic::resume_unwind(p);
        }
    }
}

impl Default for ThreadPool {
    fn default() -> Self {
        ThreadPool::with_default_threads()
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

/// Physical cores available to this process: the logical CPUs it may use
/// divided by the SMT width Linux reports (1 elsewhere).
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let smt = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list")
        .map(|s| siblings_in(s.trim()))
        .unwrap_or(1)
        .max(1);
    (logical / smt).max(1)
}

/// CPUs in a Linux CPU list such as `0-1`, `0,8` or `3`.
fn siblings_in(list: &str) -> usize {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum()
}

/// Split `0..len` into `parts` contiguous ranges of near-equal size; range `i`.
pub fn chunk(len: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    let parts = parts.max(1);
    let (base, extra) = (len / parts, len % parts);
    let start = i * base + i.min(extra);
    let end = start + base + usize::from(i < extra);
    start.min(len)..end.min(len)
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
    fn survives_parking_and_concurrent_callers() {
        let pool = ThreadPool::with_awake_time(2, Duration::from_millis(1));
        let sum = AtomicU64::new(0);
        for round in 0..3 {
            if round > 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            pool.run(64, &|i| {
                sum.fetch_add(i as u64, Ordering::Relaxed);
            });
        }
        assert_eq!(sum.load(Ordering::Relaxed), 3 * (63 * 64 / 2));
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..50 {
                        pool.run(5, &|i| {
                            sum.fetch_add(i as u64, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(sum.load(Ordering::Relaxed), 3 * (63 * 64 / 2) + 150 * 10);
    }

    #[test]
    fn a_panicking_task_is_reraised_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        let ran = AtomicU64::new(0);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(16, &|i| {
                ran.fetch_add(1, Ordering::Relaxed);
                assert!(i != 5, "task 5 fails");
            })
        }));
        assert!(caught.is_err());
        assert_eq!(ran.load(Ordering::Relaxed), 16);
        let sum = AtomicU64::new(0);
        pool.run(4, &|i| {
            sum.fetch_add(i as u64, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn chunks_cover_the_range_evenly() {
        for (len, parts) in [(10, 4), (3, 5), (0, 2), (17, 1)] {
            let mut covered = vec![0; len];
            for i in 0..parts {
                let r = chunk(len, parts, i);
                assert!(r.len() <= len.div_ceil(parts) && r.len() + 1 >= len / parts);
                for j in r {
                    covered[j] += 1;
                }
            }
            assert!(covered.iter().all(|&c| c == 1));
        }
    }

    #[test]
    fn cpu_lists_and_core_counts() {
        assert_eq!(siblings_in("0-1"), 2);
        assert_eq!(siblings_in("0,8"), 2);
        assert_eq!(siblings_in("3"), 1);
        assert!(physical_cores() >= 1);
        assert!(ThreadPool::with_default_threads().threads() >= 1);
    }
}
