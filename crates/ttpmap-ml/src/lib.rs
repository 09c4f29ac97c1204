//! ttpmap-ml: models on candle that implement ttpmap-core's traits. (Being written: issue 3.)
