//! Exports of extraction results. (Being written.)
