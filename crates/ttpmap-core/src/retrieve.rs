//! BM25 retrieval over technique documents. (Being written.)
