//! Shared fleet and scenario generators for the benchmarks.
