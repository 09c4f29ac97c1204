//! Extraction pipeline. (Being written.)
