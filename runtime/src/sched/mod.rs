//! placeholder, replaced by the sched helper
