//! Whole-inventory tests against generated host trees.
