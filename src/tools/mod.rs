//! The tools that are not the operator: benchmarks, the generated installation, the dependency
//! graph, and following events and Runs from a terminal.

pub mod bench;
pub mod deploy;
pub mod graph;
pub mod tail;
pub mod watch;
