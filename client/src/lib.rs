//! Placeholder: being written (see issues).
