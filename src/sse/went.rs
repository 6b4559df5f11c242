//! `Went`: the client of a plain HTTP/1.x `/events` request closed its connection before the
//! stream opened (the server reads the end of its input meanwhile). Such a request must not
//! open a stream: being the session's newest, it would replace the live one its client opened
//! next (a browser that closed one `EventSource` and opened another at once, both waiting for
//! a busy node).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Went(Arc<AtomicBool>);

impl Went {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
