//! The reconcile loops (scheduler, controller) and the leadership that gates them.
