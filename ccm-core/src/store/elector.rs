//! Leader election on any [`super::StateStore`]: a leader key held by a lease, created only if absent, fenced by its create revision.
