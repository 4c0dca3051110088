//! Threads that run the pieces of one split model ([`super::split::Par`]).
//!
//! One per thread, kept for the model's life, taking pieces from one
//! queue. Against a thread per piece (a 46 MB gzip -6 stream is ~180
//! pieces), rebuilds on 2 cores got 3 % (gzip -6) to 10 % (pgzip) faster
//! with a third fewer page faults. And no more workers than threads: with
//! one per piece in flight (two per core), `perf sched` showed runnable
//! pieces waiting 3 ms on average for a core while the other core idled,
//! as a woken worker was queued behind a busy one; a worker that finishes
//! a piece now takes the next queued one without sleeping (gzip -6
//! rebuild 0.86 -> 0.78 s, analyse 1.07 -> 1.01 s; a 10 MB Go -6 layer
//! analyses 12 % faster).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Task = Box<dyn FnOnce() + Send>;

/// Up to `max` threads taking tasks from one queue, started as tasks come.
pub(super) struct Workers {
    max: usize,
    queue: Option<Sender<Task>>,
    shared: Arc<Mutex<Receiver<Task>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub(super) fn new(max: usize) -> Self {
        let (tx, rx) = channel::<Task>();
        Workers {
            max: max.max(1),
            queue: Some(tx),
            shared: Arc::new(Mutex::new(rx)),
            threads: Vec::new(),
        }
    }

    /// Run `f` on a worker and hand its result (or its panic) to the
    /// receiver; `Err(f)` when no thread could be started at all.
    pub(super) fn run<T, F>(&mut self, f: F) -> Result<Receiver<std::thread::Result<T>>, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.threads.len() < self.max {
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("deflate-piece".into())
                .spawn(move || loop {
                    // The lock is held only while waiting for the next task.
                    let task = match shared.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match task {
                        Ok(task) => task(),
                        Err(_) => return,
                    }
                });
            match spawned {
                Ok(h) => self.threads.push(h),
                Err(_) if self.threads.is_empty() => return Err(f),
                Err(_) => {}
            }
        }
        let (tx, rx) = channel();
        let task: Task = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            // The receiver is gone only if the model was dropped meanwhile.
            let _ = tx.send(result);
        });
        self.queue
            .as_ref()
            .expect("queue open while workers live")
            .send(task)
            .expect("workers wait for tasks while the queue is open");
        Ok(rx)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the queue ends every worker once its task is done.
        self.queue = None;
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More tasks than threads all run, each result reaches its receiver,
    /// and a task's panic comes back as that task's result.
    #[test]
    fn tasks_results_and_panics() {
        let mut w = Workers::new(2);
        let rxs: Vec<_> = (0..7u64)
            .map(|i| w.run(move || i * i).unwrap_or_else(|_| panic!("no thread")))
            .collect();
        let bad = w
            .run(|| -> u64 { panic!("piece failed") })
            .unwrap_or_else(|_| panic!("no thread"));
        assert!(w.threads.len() <= 2);
        let got: Vec<u64> = rxs.iter().map(|rx| rx.recv().unwrap().unwrap()).collect();
        assert_eq!(got, vec![0, 1, 4, 9, 16, 25, 36]);
        assert!(bad.recv().unwrap().is_err());
        // The workers survived the panic.
        let rx = w.run(|| 5u64).unwrap_or_else(|_| panic!("no thread"));
        assert_eq!(rx.recv().unwrap().unwrap(), 5);
    }
}
