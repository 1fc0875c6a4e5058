//! Route modules, each returning its own router; merged in `crate::app`.

pub mod audit;
pub mod certificates;
pub mod ocsp;
pub mod pickup;
pub mod public;
pub mod tokens;
