//! Who is calling: JWT keys and claims (`jwt`), browser sessions and the caller of a request
//! (`session`), and the Origin rule for cookie-authenticated writes (`origin`).

pub(crate) mod jwt;
pub(crate) mod origin;
pub(crate) mod session;
