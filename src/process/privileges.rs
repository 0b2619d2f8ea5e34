//! Running as `server.user` and `server.group` once the listeners are bound.
