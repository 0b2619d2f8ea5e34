//! The one policy for a poisoned lock in lb, shared by every layer.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, also when a thread panicked while holding it: lb's
/// mutexes guard a value that is replaced whole (a record, a time, a
/// list), so what a panic left is a complete earlier value, still better
/// than none.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
