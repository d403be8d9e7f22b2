//! Benchmarks only; see `benches/` and the load scripts in this directory.
