//! Evaluation metrics. (Being written.)
