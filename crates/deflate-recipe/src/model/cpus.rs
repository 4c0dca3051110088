//! A CPU each for the two threads of a piped stream (`pipe.rs`).
//!
//! Why bind them: a piped rebuild is two threads passing batches back and
//! forth, each waiting for the other at times, and the scheduler is free
//! to put both on one CPU. This VM's kernel packs runnable threads onto
//! few vCPUs (`sched_vcpu_pack` on its command line), and it did: the
//! model's thread started on its caller's CPU and the two shared it for
//! the first 4 to 86 of the 167 batches of 295fef0417ad (10.8 MB, zlib
//! -1) in 5 of 6 runs traced, until the balancer parted them. Rebuilt on
//! 2 threads that stream took 21.8-32.5 ms (median 26.9, 15 runs) with
//! the model's thread busy for ~18 ms of it; bound, 19.7-20.1 ms in 14
//! of 15 runs. Moving the model's thread away once at its start, or
//! waiting by spinning instead of sleeping, did not keep them apart
//! (20.2-30.4 and 19.1-44.8 ms; BENCHMARKS.md).
//!
//! Bound for the stream only: the caller's own CPU set comes back when
//! the pair is dropped. Only where the caller may run on two CPUs or more
//! and both are free of another live pair of this process (streams
//! rebuilt side by side take other CPUs, or stay unbound); the model's CPU
//! is another core than the caller's where the caller's set has one (two
//! hardware threads of one core would share its execution units); Linux
//! only.

#[cfg(target_os = "linux")]
mod imp {
    use std::sync::Mutex;

    /// CPUs held by the live pairs of this process.
    static HELD: Mutex<Vec<usize>> = Mutex::new(Vec::new());

    const SET: usize = std::mem::size_of::<libc::cpu_set_t>();

    fn held() -> std::sync::MutexGuard<'static, Vec<usize>> {
        HELD.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calling thread's CPU set.
    fn own_set() -> Option<libc::cpu_set_t> {
        // SAFETY: a syscall on this thread with a buffer of SET bytes.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            (libc::sched_getaffinity(0, SET, &mut set) == 0).then_some(set)
        }
    }

    /// The calling thread's CPU and the one picked for the model's thread.
    pub(in crate::model) struct CpuPair {
        caller_tid: libc::pid_t,
        /// The caller's CPU set before it was bound.
        set: libc::cpu_set_t,
        bound: bool,
        caller_cpu: usize,
        model_cpu: usize,
    }

    impl CpuPair {
        /// The CPU the calling thread runs on and another it may run on,
        /// both held until the pair is dropped; nothing bound yet.
        pub(in crate::model) fn pick() -> Option<CpuPair> {
            let set = own_set()?;
            // SAFETY: CPU_COUNT only reads the set.
            if unsafe { libc::CPU_COUNT(&set) } < 2 {
                return None;
            }
            // SAFETY: sched_getcpu has no preconditions.
            let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
            let n = 8 * SET;
            // SAFETY: CPU_ISSET checks its bounds.
            let allowed = |c: usize| c < n && unsafe { libc::CPU_ISSET(c, &set) };
            let siblings = std::fs::read_to_string(format!(
                "/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
            ))
            .map(|s| super::cpu_list(&s))
            .unwrap_or_default();
            let mut held = held();
            if !allowed(cpu) || held.contains(&cpu) {
                return None;
            }
            let free = |c: &usize| allowed(*c) && !held.contains(c);
            let others = (1..n).map(|i| (cpu + i) % n);
            let other = others
                .clone()
                .filter(free)
                .find(|c| !siblings.contains(c))
                .or_else(|| others.clone().find(free))?;
            held.extend([cpu, other]);
            Some(CpuPair {
                // SAFETY: gettid has no preconditions.
                caller_tid: unsafe { libc::gettid() },
                set,
                bound: false,
                caller_cpu: cpu,
                model_cpu: other,
            })
        }

        /// The CPU for the model's thread ([`bind_here`] on that thread).
        pub(in crate::model) fn model_cpu(&self) -> usize {
            self.model_cpu
        }

        /// Bind the calling thread (the one that picked) to its CPU.
        pub(in crate::model) fn bind_caller(&mut self) {
            // SAFETY: gettid has no preconditions.
            self.bound = unsafe { libc::gettid() } == self.caller_tid && bind_here(self.caller_cpu);
        }
    }

    impl Drop for CpuPair {
        fn drop(&mut self) {
            // Restored on the caller's own thread only (analyses and
            // rebuilds drop their models where they made them): another
            // thread cannot tell whether the caller still lives, and a
            // thread id is reused once its thread has ended.
            // SAFETY: plain syscalls on this thread with SET bytes.
            unsafe {
                if self.bound && libc::gettid() == self.caller_tid {
                    libc::sched_setaffinity(0, SET, &self.set);
                }
            }
            let (a, b) = (self.caller_cpu, self.model_cpu);
            held().retain(|&c| c != a && c != b);
        }
    }

    /// Bind the calling thread to `cpu`; whether it was.
    pub(in crate::model) fn bind_here(cpu: usize) -> bool {
        // SAFETY: cpu_set_t is plain bits (CPU_SET checks its bounds); a
        // syscall on this thread with a buffer of SET bytes.
        unsafe {
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            libc::sched_setaffinity(0, SET, &one) == 0
        }
    }

    #[cfg(test)]
    pub(in crate::model) fn current_set() -> Vec<usize> {
        let set = own_set().expect("sched_getaffinity");
        // SAFETY: CPU_ISSET checks its bounds.
        (0..8 * SET)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    /// Never picked off Linux: the threads stay where the OS puts them.
    pub(in crate::model) struct CpuPair;

    impl CpuPair {
        pub(in crate::model) fn pick() -> Option<CpuPair> {
            None
        }
        pub(in crate::model) fn model_cpu(&self) -> usize {
            0
        }
        pub(in crate::model) fn bind_caller(&mut self) {}
    }

    pub(in crate::model) fn bind_here(_cpu: usize) -> bool {
        false
    }
}

pub(super) use imp::*;

/// The CPUs of a Linux CPU list ("0-3,8,10-11"); what does not parse is
/// left out.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn cpu_list(s: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',') {
        let mut ends = part.splitn(2, '-').map(|x| x.trim().parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), None) => cpus.push(a),
            (Some(Ok(a)), Some(Ok(b))) if b >= a && b - a < 1 << 16 => cpus.extend(a..=b),
            _ => {}
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list("0\n"), vec![0]);
        assert_eq!(cpu_list("0,64"), vec![0, 64]);
        assert_eq!(cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(cpu_list(""), Vec::<usize>::new());
        assert_eq!(cpu_list("x,2,5-3"), vec![2]);
    }

    /// A pair binds its caller to the CPU it ran on and picks another of
    /// the caller's CPUs for the model; no two live pairs share a CPU; the
    /// caller's CPU set comes back when the pair is dropped.
    #[cfg(target_os = "linux")]
    #[test]
    fn pair_binds_and_restores() {
        let before = current_set();
        if before.len() < 2 {
            return; // nothing to pick from
        }
        // Other tests' pipes hold CPUs for a few milliseconds at a time.
        let pick = || {
            (0..2000).find_map(|_| {
                CpuPair::pick().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    None
                })
            })
        };
        let mut pair = pick().expect("two free CPUs within 2 s");
        pair.bind_caller();
        let mine = current_set();
        assert_eq!(mine.len(), 1, "caller bound to one CPU: {mine:?}");
        assert!(before.contains(&pair.model_cpu()) && mine[0] != pair.model_cpu());
        // Another thread (with the caller's old set) gets neither CPU.
        let taken = [mine[0], pair.model_cpu()];
        let other = std::thread::spawn(|| CpuPair::pick().map(|p| p.model_cpu()))
            .join()
            .unwrap();
        assert!(
            other.map_or(true, |c| !taken.contains(&c)),
            "a held CPU was picked again: {other:?} of {taken:?}"
        );
        if before.len() == 2 {
            assert_eq!(other, None);
        }
        let model = pair.model_cpu();
        let on_model = std::thread::spawn(move || {
            bind_here(model);
            current_set()
        })
        .join()
        .unwrap();
        assert_eq!(on_model, vec![model]);
        drop(pair);
        assert_eq!(current_set(), before);
        // Both CPUs were given back (on two CPUs, no pair could be had else).
        assert!(
            pick().is_some(),
            "CPUs still held after the pair was dropped"
        );
    }
}
