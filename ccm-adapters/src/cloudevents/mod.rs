//! cloudevents adapter.
