//! Non-blocking attempts. The transport may run a read on the reactor
//! thread when its data is already in the page cache (preadv2 with
//! RWF_NOWAIT) and falls back to the blocking pool when it is not; inside
//! an attempt, any backend operation that could block refuses instead.

use std::cell::Cell;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static BLOCKED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with blocking I/O forbidden; `None` if it would have blocked
/// (its result is then meaningless and must be discarded).
pub fn attempt<T>(f: impl FnOnce() -> T) -> Option<T> {
    ACTIVE.set(true);
    BLOCKED.set(false);
    let out = f();
    ACTIVE.set(false);
    (!BLOCKED.get()).then_some(out)
}

/// Whether the current thread is inside [`attempt`].
pub(crate) fn active() -> bool {
    ACTIVE.get()
}

/// Records that the attempt had to stop.
pub(crate) fn would_block() {
    BLOCKED.set(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_report_blocking() {
        assert_eq!(attempt(|| 7), Some(7));
        assert_eq!(
            attempt(|| {
                would_block();
                7
            }),
            None
        );
        assert!(!active(), "the flag is cleared afterwards");
    }
}
