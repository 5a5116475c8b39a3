//! Blocking primitives for green threads (filled in below).
