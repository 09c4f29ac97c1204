//! Report ingestion and sentence segmentation. (Being written.)
