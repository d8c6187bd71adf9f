//! The time-aware capacity planner and autoscaler (domain.md §5).
